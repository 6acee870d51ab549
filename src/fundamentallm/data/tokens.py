"""From the data flags to token ids: in memory for small corpora, a token cache for large ones.

The validation text is `--validation-data`, or else the last `--val-split` of the training
text (cut at a character: `validation_cut`), whichever way the tokens are made.

A small corpus is read, tokenised and kept as one int32 tensor. A large one is streamed
(never held as text), tokenised once into binary token files in a cache directory keyed
by a hash of its content and of the data and tokenizer settings, and read back through a
memory map: the operating system pages in the windows a batch needs, so a corpus larger
than RAM trains, and the next run on the same data starts at once.

    <cache>/<key>/train.bin, val.bin   token ids, as narrow as the vocabulary allows: uint8 (<= 256,
                                       most character vocabularies), uint16 (<= 65,536) or int32
    <cache>/<key>/tokenizer.json       the tokenizer trained on the training part
    <cache>/<key>/meta.json            counts, dtype and the settings that made the key

An entry is built in a work directory beside it and renamed into place once complete, with
meta.json written last, so a build killed at any instant leaves no entry that a later run
reads as valid: only a work directory, which the next build on this host removes once
the process that made it is gone. Reading an entry checks each file's length against
meta.json.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager, nullcontext
from itertools import chain, groupby
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fundamentallm.atomic import WriteFailed, public_mode, write_text
from fundamentallm.config.schema import DataConfig
from fundamentallm.data.paraphrases import Paraphrases, pairs_file, training_paraphrases
from fundamentallm.data.batching import encode
from fundamentallm.data.chat import conversation_tokens
from fundamentallm.data.fingerprint import fingerprint, with_tokens
from fundamentallm.data.tables import TABLE_SUFFIXES
from fundamentallm.data.text import JSONL_SUFFIXES, data_files, read_text, stream_text
from fundamentallm.errors import UserError
from fundamentallm.tokenizers import EOS, Special, Tokenizer, build_tokenizer, tokenizer_from_dict

AUTO_CACHE_BYTES = 32 << 20  # with --token-cache auto, corpora from this size are cached
CACHE_FORMAT = 2  # part of the key: a new layout never reads an old entry (2: meta.json counts bytes too)

# A stage is a context manager factory: stage(description, total) -> advance(n) callable.
Stage = Callable[[str, int | None], object]


@dataclass
class TokenData:
    tokenizer: Tokenizer
    train: torch.Tensor | np.ndarray  # 1-D token ids (an np.memmap when cached)
    val: torch.Tensor | np.ndarray | None
    val_chars_per_token: float  # to turn a loss per token into one per character
    source: str  # where the validation text came from
    cache: str | None  # "built DIR" / "reused DIR", or None when held in memory
    paraphrases: str | None = None  # what --augment-file added, for the run summary
    documents: str | None = None  # how documents end, for the start summary
    ends: bool = False  # documents end with the end-of-text token (the model learns to write it)
    # --format chat: which target tokens are trained (1-D bool, aligned with the ids); None: all
    train_mask: np.ndarray | None = None
    val_mask: np.ndarray | None = None
    fingerprint: dict | None = None  # what the tokens were made from (data/fingerprint.py), for --resume to check
    val_bytes: int | None = None  # UTF-8 bytes of the validation text (None: not counted, an older cache entry)


def validation_cut(characters: int, cfg: DataConfig) -> int:
    """Where the training text ends and its validation part begins (no --validation-data)."""
    return int(characters * (1 - cfg.val_split))


def validation_source(cfg: DataConfig) -> str:
    """Where the validation text comes from, for the run summary."""
    if cfg.validation_data:
        return cfg.validation_data
    return f"last {cfg.val_split:.0%} of the training text" if cfg.val_split > 0 else "none"


def cache_root(setting: str) -> Path | None:
    """Where `--token-cache` puts token files: None (in memory), or a directory."""
    if setting == "off":
        return None
    if setting != "auto":
        return Path(setting)
    return user_cache() / "tokens"


def user_cache() -> Path:
    """FundamentaLLM's cache directory: $FUNDAMENTALLM_CACHE, or ~/.cache/fundamentallm."""
    return Path(os.environ.get("FUNDAMENTALLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fundamentallm"))


def load_tokens(cfg: DataConfig, tokenizer: Tokenizer | None = None, stage: Stage | None = None) -> TokenData:
    """Token ids for training and validation; `tokenizer` is given when resuming."""
    if not cfg.train:
        raise UserError("no training data given")
    files = data_files(cfg.train, cfg.glob)
    val_files = data_files(cfg.validation_data, cfg.glob, validation=True) if cfg.validation_data else []
    inputs = fingerprint(files, val_files, [pairs_file(cfg.augment_file)] if cfg.augment_file else [],
                         None if val_files else cfg.val_split, memo=user_cache() / "digests")
    data = tokens_of(cfg, tokenizer, stage, files, val_files, inputs)
    data.fingerprint = with_tokens(inputs, len(data.train), None if data.val is None else len(data.val))
    return data


def tokens_of(cfg: DataConfig, tokenizer: Tokenizer | None, stage: Stage | None, files: list[Path],
              val_files: list[Path], inputs: dict) -> TokenData:
    """load_tokens' work: conversations, or text in memory or through the token cache."""
    if cfg.format == "chat":
        chats = conversation_tokens(cfg, files, val_files, tokenizer)
        return TokenData(chats.tokenizer, chats.train, chats.val, chats.chars_per_token,
                         validation_source(cfg).replace("training text", "conversations"), None,
                         documents=chats.note, ends=True, train_mask=chats.train_mask, val_mask=chats.val_mask)
    eos, documents = document_boundary(cfg, files, tokenizer)
    root = cache_root(cfg.token_cache)
    if root is None or (cfg.token_cache == "auto" and inputs["train"]["bytes"] + inputs["validation"]["bytes"]
                        < AUTO_CACHE_BYTES):
        data = in_memory(cfg, tokenizer, eos)
        data.documents, data.ends = documents, eos
        return data
    entry = root / cache_key(inputs, cfg, tokenizer, eos)
    trained_here = root / cache_key(inputs, cfg, None, eos)  # the entry whose build trained this tokenizer
    if tokenizer is not None and built_with(trained_here, tokenizer):
        entry = trained_here  # a resumed run, an evaluation: the first run's tokens, not a second tokenisation
    remove_abandoned_builds(root)
    reused = (entry / "meta.json").exists()
    note = f"reused {entry}"
    if not reused:
        try:
            meta = build_entry(entry, cfg, tokenizer, stage or _no_stage, eos)
            note = f"built {entry} in {said(meta['seconds'], meta['train_chars'] + meta.get('val_chars', 0))}"
        except (OSError, WriteFailed) as exc:
            cause = exc.cause if isinstance(exc, WriteFailed) else exc.strerror or exc
            raise UserError(f"--token-cache {root}: cannot write the token cache there "
                            f"({cause}); choose another directory or --token-cache off") from None
    data = open_entry(entry, tokenizer, cfg, note)
    data.documents, data.ends = documents, eos
    return data


def built_with(entry: Path, tokenizer: Tokenizer) -> bool:
    """Whether a complete cache entry holds tokens made by exactly this tokenizer."""
    try:
        return (entry / "meta.json").exists() and json.loads((entry / "tokenizer.json").read_text()) == \
            json.loads(json.dumps(tokenizer.to_dict()))
    except (OSError, ValueError):
        return False


def document_boundary(cfg: DataConfig, files: list[Path], tokenizer: Tokenizer | None) -> tuple[bool, str]:
    """Whether documents end with the end-of-text token, and how the start summary says it.
    --doc-boundary auto: yes where the input is clearly several documents (records of a JSONL
    file or a table, several files, --doc-separator); one text file is one running text."""
    several = ("several files" if len(files) > 1 else
               "records" if files[0].suffix in (*JSONL_SUFFIXES, *TABLE_SUFFIXES) else
               "--doc-separator" if cfg.doc_separator else None)
    has_eos = tokenizer is None or tokenizer.eos_id is not None
    if cfg.doc_boundary == "eos" or (cfg.doc_boundary == "auto" and (several or cfg.doc_mask)):
        if not has_eos:
            if cfg.doc_boundary == "eos" or cfg.doc_mask:
                raise UserError("--doc-boundary eos: this model's tokenizer has no end-of-text token (it was "
                                "saved before there was one); fine-tune it with --init-from, which adds it")
            return False, f"{several}: joined with --separator (this model's tokenizer has no end-of-text token)"
        how = "--doc-boundary eos" if cfg.doc_boundary == "eos" else f"{several or '--doc-mask'}: --doc-boundary auto"
        return True, f"each ends with {EOS} ({how})" + ("; attention kept within each (--doc-mask)"
                                                          if cfg.doc_mask else "")
    if several:
        return False, f"{several}: joined with --separator {cfg.separator!r} (--doc-boundary none)"
    return False, "one running text (--doc-separator splits it into documents)"


def scoring_text(cfg: DataConfig, paths: str | list[str], tokenizer: Tokenizer) -> str | list[str]:
    """Text to score (`evaluate`), read as the training run read its own: documents joined by
    --separator, or ended by the end-of-text token (as a list of documents and Special pieces)."""
    eos, _ = document_boundary(cfg, data_files(paths, cfg.glob, validation=True), tokenizer)
    if not eos:
        return read_text(paths, cfg.separator, cfg.glob, cfg.text_field, validation=True,
                         doc_separator=cfg.doc_separator)
    parts = joined_runs(stream_text(paths, cfg.separator, cfg.glob, cfg.text_field, validation=True,
                                    doc_separator=cfg.doc_separator, eos=True))
    if not any(isinstance(p, str) and not isinstance(p, Special) and p.strip() for p in parts):
        raise UserError(f"{paths}: no text in the documents")
    return parts


def text_length(piece: str) -> int:
    """The characters of a piece of a text stream (a special token has none)."""
    return 0 if isinstance(piece, Special) else len(piece)


def in_memory(cfg: DataConfig, tokenizer: Tokenizer | None, eos: bool = False) -> TokenData:
    if eos:  # documents, each ended by the end-of-text token: pieces of text and Special ones
        parts = joined_runs(stream_text(cfg.train, cfg.separator, cfg.glob, cfg.text_field,
                                        doc_separator=cfg.doc_separator, eos=True))
    else:
        parts = [read_text(cfg.train, cfg.separator, cfg.glob, cfg.text_field, doc_separator=cfg.doc_separator)]
    if cfg.validation_data:
        val_parts = joined_runs(stream_text(cfg.validation_data, cfg.separator, cfg.glob, cfg.text_field,
                                            validation=True, doc_separator=cfg.doc_separator, eos=eos))
    elif cfg.val_split > 0:
        head, tail = split_at(parts, validation_cut(sum(map(text_length, parts)), cfg))
        parts, val_parts = list(head), list(tail)
    else:
        val_parts = None
    added = None
    if cfg.augment_file:
        added = training_paraphrases(cfg.augment_file, ["".join(val_parts)] if val_parts is not None else None)
        parts += [added.text, Special(EOS)] if eos else [cfg.separator + added.text]
    tokenizer = tokenizer or build_tokenizer(cfg.tokenizer, parts[0] if len(parts) == 1 else parts,
                                             cfg.bpe_vocab_size, cfg.special_tokens)
    train = encode(tokenizer, parts)
    val = encode(tokenizer, val_parts) if val_parts is not None else None
    chars_per_token = sum(map(text_length, val_parts)) / max(1, len(val)) if val is not None else 1.0
    val_bytes = (sum(len(p.encode("utf-8")) for p in val_parts if not isinstance(p, Special))
                 if val is not None else None)
    return TokenData(tokenizer, train, val, chars_per_token, validation_source(cfg), None, paraphrase_note(added, cfg),
                     val_bytes=val_bytes)


def joined_runs(pieces: Iterable[str]) -> list[str]:
    """The pieces of a text stream with each run of text between special tokens joined into one
    string (a document, for a tokenizer that trains or encodes document by document)."""
    parts: list[str] = []
    for special, run in groupby(pieces, key=lambda p: isinstance(p, Special)):
        parts += list(run) if special else ["".join(run)]
    return parts


def paraphrase_note(added: Paraphrases | None, cfg: DataConfig) -> str | None:
    if added is None:
        return None
    return (f"{added.used:,} from {cfg.augment_file}"
            + (f" ({added.left_out:,} of validation units left out)" if added.left_out else ""))


def cache_key(inputs: dict, cfg: DataConfig, tokenizer: Tokenizer | None, eos: bool = False) -> str:
    """Content and settings, hashed: the same bytes read the same way give the same key.
    `inputs`: the files' fingerprint (data/fingerprint.py), which digests their contents."""
    h = hashlib.blake2b(digest_size=12)
    settings = {"format": CACHE_FORMAT, "separator": cfg.separator, "text_field": cfg.text_field,
                "val_split": inputs["val_split"], "tokenizer": cfg.tokenizer,
                "vocab_size": cfg.bpe_vocab_size,
                "trained": tokenizer.to_dict() if tokenizer is not None else None,
                "documents": [eos, cfg.doc_separator], "specials": cfg.special_tokens,
                "contents": [inputs[group]["digest"] for group in ("train", "validation", "augment")]}
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def split_at(pieces: Iterable[str], cut: int) -> tuple[Iterator[str], Iterator[str]]:
    """Two streams: the first `cut` characters of `pieces`, and the rest. The second must be
    read after the first (each piece is read once)."""
    state = {"rest": iter(pieces), "tail": ""}

    def head() -> Iterator[str]:
        left = cut
        for piece in state["rest"]:
            if isinstance(piece, Special):  # no characters: on the side where it comes
                yield piece
                continue
            if len(piece) >= left:
                yield piece[:left]
                state["tail"] = piece[left:]
                return
            left -= len(piece)
            yield piece

    def tail() -> Iterator[str]:
        if state["tail"]:
            yield state["tail"]
        yield from state["rest"]

    return head(), tail()


def timed(stage: Stage, seconds: dict[str, float]) -> Stage:
    """`stage`, recording how long each one took in `seconds` (said in the start summary)."""
    @contextmanager
    def timed_stage(description: str, total: int | None):
        began = time.perf_counter()
        with stage(description, total) as advance:
            yield advance
        seconds[description] = round(time.perf_counter() - began, 2)
    return timed_stage


def said(seconds: dict[str, float], characters: int) -> str:
    """'counting characters 1.0 s, training the bpe tokenizer 2.1 s, tokenizing 3.2 s (31 MB/s)'"""
    stages = ", ".join(f"{stage} {s:.1f} s" for stage, s in seconds.items())
    rate = seconds.get("tokenizing")
    return stages + (f" ({characters / rate / 1e6:.1f} M characters/s)" if rate else "")


def build_entry(entry: Path, cfg: DataConfig, tokenizer: Tokenizer | None, stage: Stage, eos: bool = False) -> dict:
    """Tokenise the corpus into `entry`; its meta.json."""
    seconds: dict[str, float] = {}
    stage = timed(stage, seconds)

    def corpus() -> Iterator[str]:
        return stream_text(cfg.train, cfg.separator, cfg.glob, cfg.text_field, doc_separator=cfg.doc_separator,
                           eos=eos)

    if cfg.validation_data:
        total = None

        def parts() -> tuple[Iterator[str], Iterator[str] | None]:
            return corpus(), stream_text(cfg.validation_data, cfg.separator, cfg.glob, cfg.text_field,
                                         validation=True, doc_separator=cfg.doc_separator, eos=eos)
    else:
        with stage("counting characters", None) as advance:
            total = 0
            for piece in corpus():
                total += text_length(piece)
                advance(text_length(piece))
        cut = validation_cut(total, cfg)

        def parts() -> tuple[Iterator[str], Iterator[str] | None]:
            head, tail = split_at(corpus(), cut)
            return head, (tail if cfg.val_split > 0 else None)

    added = None
    if cfg.augment_file:  # which paraphrases may join: a pass over the validation part
        head, tail = parts()
        if tail is not None and not cfg.validation_data:
            for _ in head:  # (the tail of a split is read after its head)
                pass
        added = training_paraphrases(cfg.augment_file, tail)

    def training_part(head: Iterator[str]) -> Iterator[str]:
        if added is None:
            return head
        return chain(head, [added.text, Special(EOS)] if eos else [cfg.separator + added.text])

    if tokenizer is None:
        with stage(f"training the {cfg.tokenizer} tokenizer", None):
            tokenizer = build_tokenizer(cfg.tokenizer, training_part(parts()[0]), cfg.bpe_vocab_size,
                                        cfg.special_tokens)
    dtype = ids_dtype(tokenizer.vocab_size)
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{BUILDING}{socket.gethostname()}-{os.getpid()}-", dir=entry.parent))
    work.chmod(public_mode(directory=True))  # mkdtemp's 0700 would stay with the renamed entry
    try:
        train_part, val_part = parts()
        train_part = training_part(train_part)
        meta = {"dtype": np.dtype(dtype).name, "key_settings": cfg_summary(cfg),
                "paraphrases": paraphrase_note(added, cfg)}
        with stage("tokenizing", total) as advance:
            meta["train_tokens"], meta["train_chars"], meta["train_bytes"] = write_tokens(
                tokenizer, train_part, work / "train.bin", dtype, advance)
            if val_part is not None:
                meta["val_tokens"], meta["val_chars"], meta["val_bytes"] = write_tokens(
                    tokenizer, val_part, work / "val.bin", dtype, advance)
        meta["seconds"] = seconds
        write_text(work / "tokenizer.json", json.dumps(tokenizer.to_dict()))
        write_text(work / "meta.json", json.dumps(meta))  # last: its presence marks a complete entry
        publish_entry(work, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return meta


def ids_dtype(vocab_size: int) -> type:
    """The narrowest integer type that holds every id: the cache of a gigabyte of text is read
    and written once per preparation, and paged in per batch."""
    return np.uint8 if vocab_size <= 1 << 8 else np.uint16 if vocab_size <= 1 << 16 else np.int32


BUILDING = ".building-"  # work directories: .building-HOST-PID-XXXX


def remove_abandoned_builds(root: Path) -> None:
    """Work directories of builds on this host whose process is gone (killed mid-build). Those
    of other hosts sharing the cache are left alone: their processes cannot be seen from here."""
    host = socket.gethostname()
    if not root.is_dir():
        return
    for work in root.glob(f"{BUILDING}{host}-*"):
        pid = work.name[len(BUILDING) + len(host) + 1:].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def publish_entry(work: Path, entry: Path) -> None:
    """Move a finished entry into place, atomically: a reader sees no entry or a whole one.
    Another run may have built the same entry meanwhile (same key, same content): renaming a
    directory onto a non-empty one fails, and then theirs is kept. Any other failure is reported."""
    try:
        os.replace(work, entry)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) and (entry / "meta.json").exists():
            return
        raise


def write_tokens(tokenizer: Tokenizer, pieces: Iterable[str], path: Path, dtype, advance) -> tuple[int, int, int]:
    """Tokenise `pieces` into a flat binary file; return (tokens, characters, UTF-8 bytes)."""
    tokens = chars = size = 0

    def counted() -> Iterator[str]:
        nonlocal chars, size
        for piece in pieces:
            chars += text_length(piece)
            # (ASCII text, most of most corpora, is its own UTF-8: no copy to count its bytes)
            size += 0 if isinstance(piece, Special) else len(piece) if piece.isascii() else len(piece.encode())
            advance(text_length(piece))
            yield piece

    with path.open("wb") as out:
        for ids in tokenizer.encode_stream(counted()):
            out.write(ids.astype(dtype, copy=False).data)
            tokens += len(ids)
        out.flush()
        os.fsync(out.fileno())  # on disk before meta.json says the entry is complete
    return tokens, chars, size


def open_entry(entry: Path, tokenizer: Tokenizer | None, cfg: DataConfig, note: str) -> TokenData:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        cached = tokenizer_from_dict(json.loads((entry / "tokenizer.json").read_text()))
        train = _map(entry / "train.bin", meta["dtype"], meta["train_tokens"])
        val = _map(entry / "val.bin", meta["dtype"], meta["val_tokens"]) if meta.get("val_tokens") else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{entry}: damaged token cache entry ({exc}); delete it to rebuild") from None
    chars_per_token = meta["val_chars"] / max(1, meta["val_tokens"]) if val is not None else 1.0
    return TokenData(tokenizer or cached, train, val, chars_per_token, validation_source(cfg), note,
                     meta.get("paraphrases"), val_bytes=meta.get("val_bytes"))


def _map(path: Path, dtype: str, count: int) -> np.ndarray:
    """A read-only memory map of `count` ids (an empty array for none: mmap cannot map 0 bytes)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    ids = np.memmap(path, dtype=dtype, mode="r")
    if len(ids) != count:
        raise ValueError(f"{path.name} holds {len(ids)} tokens, meta.json says {count}")
    return ids


def cfg_summary(cfg: DataConfig) -> dict:
    return {k: v for k, v in asdict(cfg).items() if k != "token_cache"}


def _no_stage(description: str, total: int | None):
    return nullcontext(lambda n: None)
