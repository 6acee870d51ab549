"""Paraphrase files: a text's units (lines or sentences), and the pairs file of paraphrases.

`fundamentallm data augment --back-translate` (corpus/backtranslation.py) writes OUT and
OUT.pairs.jsonl, each paraphrase beside the unit it paraphrases; `train --augment-file OUT`
reads the pairs here and trains on the paraphrases whose units are not in the validation
text, so nothing of the validation text reaches training in other words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fundamentallm.errors import UserError

UNITS = ("lines", "sentences")  # what is translated whole
MIXES = ("append", "interleave", "replace")  # where paraphrases go: after the text, after each unit, instead
PAIRS_SUFFIX = ".pairs.jsonl"
PAIRS_FORMAT = 1

# A sentence ends at ., !, ? or … (perhaps inside a closing quote or bracket) before whitespace.
SENTENCE_BREAK = re.compile(r"(?:(?<=[.!?…])|(?<=[.!?…][\"'”’)\]]))\s+")


# ---------------------------------------------------------------- a text as units and the text between them
@dataclass
class Segment:
    text: str
    unit: bool  # a unit holds a letter and may be translated; other segments are kept as they are

    @property
    def core(self) -> str:
        return self.text.strip()


def segments(text: str, by: str) -> list[Segment]:
    """`text` cut into segments whose concatenation is `text` exactly: each line (or each
    sentence of a line) is a unit if it holds a letter; line ends and the whitespace between
    sentences are segments of their own."""
    out: list[Segment] = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        parts = [body] if by == "lines" else _with_separators(body)
        out.extend(Segment(part, any(c.isalpha() for c in part)) for part in parts if part)
        if len(line) > len(body):
            out.append(Segment(line[len(body):], False))
    return out


def _with_separators(line: str) -> list[str]:
    """A line's sentences and the whitespace after each, alternately."""
    parts, start = [], 0
    for match in SENTENCE_BREAK.finditer(line):
        parts += [line[start:match.start()], match.group()]
        start = match.end()
    return parts + [line[start:]]


def unit_texts(pieces: Iterable[str], by: str) -> Iterator[str]:
    """The stripped units of a stream of text (read a line at a time, in bounded memory)."""
    pending = ""
    for piece in pieces:
        pending += piece
        *lines, pending = pending.split("\n")
        for line in lines:
            yield from (s.core for s in segments(line, by) if s.unit)
    yield from (s.core for s in segments(pending, by) if s.unit)


def assemble(segs: list[Segment], paraphrases: dict[int, str], mix: str, by: str) -> tuple[str, int]:
    """OUT's text and its number of units (lines, or sentences)."""
    lead = {i: segs[i].text[:len(segs[i].text) - len(segs[i].text.lstrip())] for i in paraphrases}
    if mix == "append":
        text = "".join(s.text for s in segs)
        if paraphrases:
            text += ("" if not text or text.endswith("\n") else "\n") + "".join(
                paraphrases[i] + "\n" for i in sorted(paraphrases))
    else:
        between = "\n" if by == "lines" else " "
        out = []
        for i, s in enumerate(segs):
            if i not in paraphrases:
                out.append(s.text)
            elif mix == "replace":
                out.append(lead[i] + paraphrases[i] + s.text[len(s.text.rstrip()):])
            else:  # interleave: the unit, then its paraphrase
                out.append(s.text + between + (lead[i] if by == "lines" else "") + paraphrases[i])
        text = "".join(out)
    return text, sum(1 for s in segments(text, by) if s.unit)


# ---------------------------------------------------------------- train --augment-file
@dataclass
class Paraphrases:
    text: str  # the paraphrases to train on, one per line
    used: int
    left_out: int  # paraphrases of units that are also in the validation text


def pairs_file(path: str | Path) -> Path:
    """OUT.pairs.jsonl for OUT (or the pairs file itself)."""
    path = Path(path)
    pairs = path if path.name.endswith(PAIRS_SUFFIX) else path.with_name(path.name + PAIRS_SUFFIX)
    if not pairs.is_file():
        raise UserError(f"--augment-file {path}: no {pairs.name} beside it; pass a file written by "
                        "`fundamentallm data augment --back-translate`")
    return pairs


def read_pairs(path: str | Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    pairs = pairs_file(path)
    try:
        lines = pairs.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0])
        records = [json.loads(line) for line in lines[1:] if line.strip()]
        if header.get("format") != PAIRS_FORMAT or header.get("by") not in UNITS:
            raise ValueError(f"format {header.get('format')!r}, by {header.get('by')!r}")
        if not all(isinstance(r.get("source"), str) and isinstance(r.get("paraphrase"), str) for r in records):
            raise ValueError("a record without its source or paraphrase text")
    except (OSError, UnicodeDecodeError, ValueError, IndexError, AttributeError) as exc:
        raise UserError(f"--augment-file {pairs}: not a pairs file written by `fundamentallm data augment` "
                        f"({exc})") from None
    return header, records


def training_paraphrases(path: str | Path, validation: Iterable[str] | None) -> Paraphrases:
    """The paraphrases of `path` whose units are not in the validation text, so that nothing
    of the validation text reaches training in other words. A unit cut in two by the end of
    the training part counts as validation text too (its second half starts the validation)."""
    header, records = read_pairs(path)
    sources = {r["source"] for r in records}
    seen: set[str] = set()
    if validation is not None:
        first = True
        for unit in unit_texts(validation, header["by"]):
            if first:  # perhaps the end of a unit that began in the training part
                seen.update(s for s in sources if s.endswith(unit))
                first = False
            if unit in sources:
                seen.add(unit)
    kept = [r["paraphrase"] for r in records if r["source"] not in seen]
    text = "".join(" ".join(p.split()) + "\n" for p in kept)
    return Paraphrases(text, len(kept), len(records) - len(kept))
