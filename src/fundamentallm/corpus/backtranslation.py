"""Back-translation: paraphrase a corpus by translating it into a pivot language and back.

Sennrich, Haddow & Birch (2016, "Improving Neural Machine Translation Models with Monolingual
Data") made back-translation the standard way to get more parallel text; for a language
model the round trip en → fr → en gives a paraphrased copy of its corpus: the same meaning
in other words, a different stream of tokens to learn from. Edunov et al. (2018,
"Understanding Back-Translation at Scale") found sampled translations more useful than the
most likely ones; `sample=True` samples from the ten most likely tokens, their restricted form.

    IN   → segments: the units to translate (lines or sentences) and the text between them
         → a seeded `fraction` of the units
         → each unit cut into pieces the model's input holds (never truncated)
         → to the pivot language in batches, the pivot cut again for the back model, and back
    OUT  : the paraphrases appended to IN, interleaved with their units, or in their place
    OUT.pairs.jsonl : each paraphrase with its unit, for `train --augment-file OUT`

The work is done a chunk of `batch_size` units at a time, in a fixed order (shortest first,
which pads least), and each finished chunk is appended to a cache file keyed by the two
models (a digest of their weights and vocabularies), the generation settings and the unit's
text. An interrupted run, started again, skips the chunks in the cache and so continues
where it was, with the output an uninterrupted run would have written; another run over
text it has seen (a larger fraction, an edited file) reuses those units.

A translation that fills its length bound without an end-of-sequence token is "unfinished":
its unit is kept as it was and counted, rather than cut off.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from fundamentallm.atomic import same_file, write_text
from fundamentallm.checkpoint import content_digest
from fundamentallm.data.text import read_text_file
from fundamentallm.data.tokens import user_cache
from fundamentallm.data.paraphrases import PAIRS_FORMAT, PAIRS_SUFFIX, SENTENCE_BREAK, assemble, segments
from fundamentallm.errors import UserError
from fundamentallm.training.precision import resolve_device

DEFAULT_MODEL = "Helsinki-NLP/opus-mt-{source}-{target}"  # the MarianMT models of the specification
CACHE_FORMAT = 1
EXTRA = "pip install fundamentallm[augment]"

# Where a text too long for the model is cut, in order of preference: sentences, clauses, words.
BREAKS = (SENTENCE_BREAK, re.compile(r"(?<=[,;:])\s+"), re.compile(r"\s+"))
LANGUAGE = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]+)*")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?")


def chosen_units(count: int, fraction: float, seed: int) -> list[int]:
    """Which of `count` units to translate: round(fraction × count) of them, drawn with `seed`."""
    return sorted(random.Random(seed).sample(range(count), round(fraction * count)))


# ---------------------------------------------------------------- the models
def require_transformers() -> None:
    for module in ("transformers", "sentencepiece"):
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"back-translation needs {module}, which is not installed: {EXTRA}") from None


def offline() -> bool:
    """No way to reach the Hugging Face Hub: HF_HUB_OFFLINE is set, or its name does not resolve
    (checked in a moment, rather than let the hub client retry for half a minute)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return True
    return False


def locate(name: str, flag: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is on this machine) for a directory or a
    hub id; a missing directory or an unreachable, uncached model is a one-line error."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{flag} {name}: no config.json there; expected a translation model directory "
                            "(saved with save_pretrained)")
        return str(path), True
    if name.startswith((".", "/", "~")) or name.endswith("/") or not HUB_ID.fullmatch(name):
        raise UserError(f"{flag} {name}: no such directory")
    from huggingface_hub import try_to_load_from_cache  # with transformers: the [augment] extra

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name, True
    if offline():
        raise UserError(
            f"{flag} {name}: not in the local Hugging Face cache and this machine is offline; download it "
            f"where there is a network with `hf download {name}` (huggingface-cli download {name} with older "
            f"huggingface_hub) and copy the cache (HF_HOME), or pass {flag} DIR, a model directory")
    return name, False


def load_model(name: str, flag: str, device: Any) -> tuple[Any, Any]:
    """A seq2seq model and its tokenizer. Never runs code from the model's files
    (trust_remote_code stays off); weights are read with safetensors or weights_only."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer  # the [augment] extra, checked above
    from transformers.utils import logging as hf_logging

    where, local = locate(name, flag)
    hf_logging.set_verbosity_error()  # their notes and bars would bury ours
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local, trust_remote_code=False)
        model = AutoModelForSeq2SeqLM.from_pretrained(where, local_files_only=local, trust_remote_code=False)
    except ImportError as exc:
        raise UserError(f"{flag} {name}: its tokenizer needs a package that is missing ({exc}): {EXTRA}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{flag} {name}: cannot load a translation model from it ({exc})") from None
    return model.to(device).eval(), tokenizer


@dataclass
class Generation:
    """How a translation is decoded; None: the model's own generation config decides."""

    num_beams: int | None = None
    sample: bool = False  # restricted sampling, top-k 10 (Edunov et al., 2018)

    def kwargs(self) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        if self.num_beams is not None:
            chosen["num_beams"] = self.num_beams
        if self.sample:
            chosen.update(do_sample=True, top_k=10, num_beams=1)
        return chosen


class Direction:
    """One translation model and its tokenizer: text in one language to text in another."""

    def __init__(self, model: Any, tokenizer: Any, name: str, generation: Generation, max_length: int | None):
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.generation = generation.kwargs()
        self.positions = model_limit(model, tokenizer)  # the most tokens it reads or writes
        self.limit = input_limit(self.positions, max_length, name)  # the most one input may hold
        eos = model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos if eos is not None else tokenizer.eos_token_id])
        self.calls = 0  # generate() calls: the batches run

    def identity(self) -> str:
        return content_digest({"class": type(self.model).__name__, "weights": self.model.state_dict(),
                               "vocabulary": self.tokenizer.get_vocab(), "limit": self.limit,
                               "positions": self.positions})

    def count(self, text: str) -> int:
        """Tokens the model reads for `text`, its end token included."""
        return len(self.tokenizer(text)["input_ids"])

    def bounded(self, text: str) -> list[str]:
        return bounded(text, self.count, self.limit)

    def translate(self, texts: list[str], batch_size: int, seed: int) -> list[str | None]:
        """Each text translated (None: unfinished, its output reached the length bound)."""
        out: list[str | None] = []
        device = self.model.device
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True).to(device)
            # An output over twice its input is a loop, not a translation; and never past the positions.
            new_tokens = min(self.positions, 2 * batch["input_ids"].shape[1] + 16)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.inference_mode():
                torch.manual_seed(seed + start)
                generated = self.model.generate(**batch, max_new_tokens=new_tokens, **self.generation)
            self.calls += 1
            decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for row, text in zip(generated[:, 1:].tolist(), decoded):  # (after the decoder's start token)
                ends = [i for i, token in enumerate(row) if token in self.eos]
                finished = bool(ends) and ends[0] < new_tokens - 1  # the last place may hold a forced end
                out.append(" ".join(text.split()) if finished else None)
        return out


def bounded(text: str, count: Callable[[str], int], limit: int, level: int = 0) -> list[str]:
    """`text` as pieces of at most `limit` tokens (by `count`), cut at sentence ends, then at
    clause punctuation, then between words (a word longer than the limit, by characters);
    joined by spaces, the pieces are `text` with each run of whitespace one space (but for a
    word cut by characters, which gains one)."""
    if count(text) <= limit:
        return [text]
    if level == len(BREAKS):
        half = len(text) // 2
        return bounded(text[:half], count, limit, level) + bounded(text[half:], count, limit, level)
    parts = [part for part in BREAKS[level].split(text) if part]
    if len(parts) == 1:
        return bounded(text, count, limit, level + 1)
    pieces, current = [], ""
    for part in parts:  # pack whole parts greedily
        joined = f"{current} {part}" if current else part
        if current and count(joined) > limit:
            pieces.append(current)
            current = part
        else:
            current = joined
    pieces.append(current)
    return [small for piece in pieces for small in bounded(piece, count, limit, level + 1)]


def model_limit(model: Any, tokenizer: Any) -> int:
    """The model's positions, or its tokenizer's limit where that is lower (512 if neither says)."""
    limits = [n for n in (getattr(model.config, "max_position_embeddings", None),
                          getattr(tokenizer, "model_max_length", None)) if isinstance(n, int) and n < 1 << 20]
    return min(limits) if limits else 512


def input_limit(limit: int, max_length: int | None, name: str) -> int:
    """The most tokens one input may hold: the model's limit, or `max_length` below it."""
    if max_length is None:
        return limit
    if max_length > limit:
        raise UserError(f"--max-length {max_length}: {name} reads at most {limit} tokens")
    if max_length < 4:
        raise UserError(f"--max-length {max_length}: too short to hold a word and its end token (at least 4)")
    return max_length


# ---------------------------------------------------------------- the cache
def cache_root(setting: str | None) -> Path:
    if setting:
        return Path(setting)
    return user_cache() / "backtranslation"


class TranslationCache:
    """Finished units, one JSON line each ({"key", "pivot", "out"}), appended and flushed to
    disk chunk by chunk; a line cut off by a kill is ignored when read."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, tuple[str | None, str | None]] = {}
        self.torn = False  # the last line was cut off: the next one must start on a line of its own
        if path.exists():
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    self.torn = not line.endswith("\n")
                    try:
                        record = json.loads(line)
                        self.entries[record["key"]] = (record["pivot"], record["out"])
                    except (ValueError, KeyError, TypeError):
                        continue

    @staticmethod
    def key(text: str) -> str:
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def get(self, text: str) -> tuple[str | None, str | None] | None:
        return self.entries.get(self.key(text))

    def add(self, results: dict[str, tuple[str | None, str | None]]) -> None:
        lines = []
        for text, (pivot, out) in results.items():
            self.entries[self.key(text)] = (pivot, out)
            lines.append(json.dumps({"key": self.key(text), "pivot": pivot, "out": out}, ensure_ascii=False))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write("\n" * self.torn + "\n".join(lines) + "\n")
                self.torn = False
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            raise UserError(f"{self.path}: cannot write the translation cache ({exc.strerror or exc}); "
                            "choose another --cache directory") from None


# ---------------------------------------------------------------- the command
@dataclass(kw_only=True)
class BackTranslation:
    """The settings of one `data augment --back-translate` run."""

    source_lang: str = "en"
    pivot: str = "fr"
    model_to: str | None = None
    model_back: str | None = None
    fraction: float = 1.0
    by: str = "lines"
    mix: str = "append"
    batch_size: int = 16
    generation: Generation = field(default_factory=Generation)
    max_length: int | None = None
    device: str = "auto"
    seed: int = 0
    cache: str | None = None


@dataclass
class Report:
    units: int = 0  # translatable units in IN
    chosen: int = 0  # units drawn by the fraction
    distinct: int = 0  # distinct texts among them (each translated once)
    pieces: int = 0  # inputs the model read (more than `distinct` when long units were cut)
    changed: int = 0  # units whose paraphrase differs from them
    unchanged: int = 0  # came back as they were
    unfinished: int = 0  # a translation reached its length bound: kept as it was
    from_cache: int = 0  # distinct texts found in the cache
    batches: int = 0  # generate() calls, both directions
    seconds: float = 0.0
    output_units: int = 0
    cache: str = ""
    models: list[str] = field(default_factory=list)

    @property
    def units_per_second(self) -> float:
        return (self.distinct - self.from_cache) / self.seconds if self.seconds > 0 else 0.0


def output_paths(source: Path, output: Path, overwrite: bool) -> Path:
    """The pairs file beside OUT; neither may be IN, and an existing OUT needs `overwrite`."""
    pairs = output.with_name(output.name + PAIRS_SUFFIX)
    for path in (output, pairs):
        if same_file(source, path):
            raise UserError(f"{output}: is the input file; write the augmented text to a new file")
    if output.is_dir():
        raise UserError(f"{output}: is a directory, expected an output file path")
    if output.exists() and not overwrite:
        raise UserError(f"{output}: exists; pass --overwrite to replace it")
    return pairs


def back_translate(source: str | Path, output: str | Path, settings: BackTranslation, overwrite: bool = False,
                   progress: Callable[[int, int], Any] | None = None) -> Report:
    """Write OUT (and OUT.pairs.jsonl) from IN; see the module's docstring."""
    source, output = Path(source), Path(output)
    check_languages(settings)
    pairs_path = output_paths(source, output, overwrite)
    text = read_text_file(source)
    segs = segments(text, settings.by)
    unit_at = [i for i, s in enumerate(segs) if s.unit]
    chosen = [unit_at[j] for j in chosen_units(len(unit_at), settings.fraction, settings.seed)]
    report = Report(units=len(unit_at), chosen=len(chosen))
    distinct = list(dict.fromkeys(segs[i].core for i in chosen))
    report.distinct = len(distinct)
    results: dict[str, tuple[str | None, str | None]] = {}
    if distinct:
        results = run_models(distinct, settings, report, progress)
    paraphrases: dict[int, str] = {}
    for i in chosen:
        pivot, out = results[segs[i].core]
        if out is None:
            report.unfinished += 1
        elif not out or out == segs[i].core:
            report.unchanged += 1
        else:
            report.changed += 1
            paraphrases[i] = out
    augmented, report.output_units = assemble(segs, paraphrases, settings.mix, settings.by)
    header = {"fundamentallm": "back-translation pairs", "format": PAIRS_FORMAT, "by": settings.by,
              "source": str(source), "mix": settings.mix, "models": report.models, "changed": report.changed}
    records = [json.dumps({"source": segs[i].core, "pivot": results[segs[i].core][0], "paraphrase": out},
                          ensure_ascii=False) for i, out in paraphrases.items()]
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text(pairs_path, "\n".join([json.dumps(header, ensure_ascii=False), *records]) + "\n")
    write_text(output, augmented)
    return report


def check_languages(settings: BackTranslation) -> None:
    for flag, value in (("--source-lang", settings.source_lang), ("--pivot", settings.pivot)):
        if not LANGUAGE.fullmatch(value):
            raise UserError(f"{flag} {value!r}: expected a language code such as en, fr or de")
    if settings.source_lang == settings.pivot:
        raise UserError(f"--pivot {settings.pivot}: is the source language; choose another to translate through")


def run_models(texts: list[str], settings: BackTranslation, report: Report,
               progress: Callable[[int, int], Any] | None) -> dict[str, tuple[str | None, str | None]]:
    """Every text's (pivot, paraphrase), from the cache or the models, a chunk at a time."""
    require_transformers()
    device = resolve_device(settings.device)
    src, pivot = settings.source_lang, settings.pivot
    names = (settings.model_to or DEFAULT_MODEL.format(source=src, target=pivot),
             settings.model_back or DEFAULT_MODEL.format(source=pivot, target=src))
    to = Direction(*load_model(names[0], "--model-to", device), names[0], settings.generation, settings.max_length)
    back = Direction(*load_model(names[1], "--model-back", device), names[1], settings.generation,
                     settings.max_length)
    report.models = list(names)
    identity = {"format": CACHE_FORMAT, "to": to.identity(), "back": back.identity(),
                "generation": to.generation, "sampled": settings.seed if settings.generation.sample else None,
                "batch": settings.batch_size if settings.generation.sample else None}
    path = cache_root(settings.cache) / (hashlib.blake2b(json.dumps(identity, sort_keys=True).encode(),
                                                         digest_size=12).hexdigest() + ".jsonl")
    cache = TranslationCache(path)
    report.cache = str(path)
    # Shortest first: a batch of similar lengths pads least. Ties keep the order of IN.
    order = sorted(range(len(texts)), key=lambda i: (to.count(texts[i]), i))
    texts = [texts[i] for i in order]
    results: dict[str, tuple[str | None, str | None]] = {}
    started = time.perf_counter()
    done = 0
    for chunk_start in range(0, len(texts), settings.batch_size):
        chunk = texts[chunk_start:chunk_start + settings.batch_size]
        cached = [cache.get(text) for text in chunk]
        if all(entry is not None for entry in cached):  # finished by an earlier run
            results.update(zip(chunk, cached))
            report.from_cache += len(chunk)
        else:
            found = round_trip(to, back, chunk, settings.batch_size, settings.seed + chunk_start, report)
            cache.add(found)
            results.update(found)
        done += len(chunk)
        if progress is not None:
            progress(done, len(texts))
    report.seconds = time.perf_counter() - started
    report.batches = to.calls + back.calls
    return results


def round_trip(to: Direction, back: Direction, texts: list[str], batch_size: int, seed: int,
               report: Report) -> dict[str, tuple[str | None, str | None]]:
    """(pivot, paraphrase) of each text; None where a translation was unfinished."""
    pivots = joined(to, texts, batch_size, seed, report)
    finished = [p for p in pivots if p is not None]
    backs = iter(joined(back, finished, batch_size, seed + 1, report))
    return {text: (pivot, next(backs) if pivot is not None else None) for text, pivot in zip(texts, pivots)}


def joined(direction: Direction, texts: list[str], batch_size: int, seed: int, report: Report) -> list[str | None]:
    """Each text translated whole: cut into pieces within the input limit, translated, joined."""
    pieces = [direction.bounded(text) for text in texts]
    flat = [piece for group in pieces for piece in group]
    report.pieces += len(flat)
    translated = iter(direction.translate(flat, batch_size, seed))
    out: list[str | None] = []
    for group in pieces:
        parts = [next(translated) for _ in group]
        out.append(None if any(p is None for p in parts) else " ".join(parts))
    return out
