"""Splitting one corpus into train / validation (/ test) files.

A friendlier version of `head -c` / `tail -c`: by characters (a contiguous head and
tail), by lines, or by documents (a directory's files, a JSONL file's
records, or a text file's blank-line-separated blocks). Without `shuffle` the parts are
contiguous (train first, then validation, then test), which keeps validation text unseen
in style as well as content; with `shuffle` each line or document goes to a part drawn
by a seeded permutation, and every part keeps the original order of what it got.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from fundamentallm.atomic import write_text
from fundamentallm.data.text import JSONL_SUFFIXES, read_documents, read_text_file
from fundamentallm.errors import UserError

UNITS = ("lines", "chars", "documents")  # what `data split` moves whole

_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")  # ends a document in a plain text file


@dataclass(frozen=True)
class Part:
    name: str
    path: Path
    units: int  # lines, characters or documents
    characters: int


def read_units(path: Path, by: str, text_field: str = "text") -> list[str]:
    """The corpus as the pieces a split moves around (each with its own separator)."""
    if by == "documents" and (path.is_dir() or path.suffix in JSONL_SUFFIXES):
        return [doc.rstrip("\n") + "\n\n" for doc in read_documents(path, text_field=text_field)]
    if path.is_dir():
        raise UserError(f"{path}: a directory splits --by documents only")
    text = read_text_file(path)
    if by == "chars":
        return list(text)
    if by == "lines":
        return text.splitlines(keepends=True)
    return [doc + "\n\n" for doc in _BLANK_LINES.split(text.strip("\n")) if doc.strip()]


def part_sizes(total: int, val: float, test: float, by: str) -> tuple[int, int, int]:
    if not 0 < val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise UserError(f"--val {val} and --test {test}: each must be a fraction, "
                        "--val above 0, and together below 1")
    n_val, n_test = max(1, round(total * val)), (max(1, round(total * test)) if test else 0)
    n_train = total - n_val - n_test
    if n_train < 1:
        raise UserError(f"only {total} {by.rstrip('s')}(s): too few to split into train, validation"
                        + (" and test" if test else ""))
    return n_train, n_val, n_test


def split_corpus(path: str | Path, out_dir: str | Path, *, val: float, test: float = 0.0,
                 by: str = "lines", shuffle: bool = False, seed: int = 0,
                 overwrite: bool = False, text_field: str = "text") -> list[Part]:
    """Write train.txt, val.txt (and test.txt when `test` > 0) into `out_dir`."""
    path, out = Path(path), Path(out_dir)
    if by not in UNITS:
        raise UserError(f"--by {by}: choose one of {', '.join(UNITS)}")
    if shuffle and by == "chars":
        raise UserError("--shuffle moves whole lines or documents; use it with --by lines or documents")
    names = ["train", "val"] + (["test"] if test else [])
    targets = [out / f"{name}.txt" for name in names]
    existing = [str(t) for t in targets if t.exists()]
    if existing and not overwrite:
        raise UserError(f"{', '.join(existing)} already exist(s); use --overwrite or another --output-dir")
    if any(t.resolve() == path.resolve() for t in targets):
        raise UserError(f"{path}: would be overwritten by the split; choose another --output-dir")
    units = read_units(path, by, text_field)
    sizes = part_sizes(len(units), val, test, by)
    order = list(range(len(units)))
    if shuffle:
        random.Random(seed).shuffle(order)
    owner = [0] * len(units)  # which part each unit goes to
    start = sizes[0]
    for part, size in enumerate(sizes[1:], 1):
        for index in order[start:start + size]:
            owner[index] = part
        start += size
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for part, (name, target) in enumerate(zip(names, targets)):
        text = "".join(u for u, o in zip(units, owner) if o == part)
        write_text(target, text)
        parts.append(Part(name, target, sizes[part], len(text)))
    return parts
