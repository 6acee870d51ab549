"""Reading a user's text safely: one clear error for every way a text file can be unusable.

Training data can be a text file, a directory (every .txt and .md file below it, or the
files matching `--glob`), or JSONL (one JSON object per line, its text in `--text-field`).
Each file or JSONL record is a document; documents are joined with a separator.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from fundamentallm.errors import UserError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)


def text_files(path: str | Path, glob: str | None = None) -> list[Path]:
    """The files behind `path`: the file itself, or the data files below a directory
    (`.txt` and `.md`, or those matching `glob`), sorted so the order is reproducible."""
    path = Path(path)
    if path.is_dir():
        found = path.rglob(glob) if glob else (p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES)
        files = sorted(p for p in found if p.is_file())
        if not files:
            what = f"no files matching {glob!r}" if glob else "no .txt or .md files"
            raise UserError(f"{path}: directory holds {what}")
        return files
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if not path.is_file():
        raise UserError(f"{path}: not a regular file")
    return [path]


def read_text_file(path: str | Path) -> str:
    """Read one UTF-8 text file; raise `UserError` if it is empty, binary or not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a text file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    if not raw.strip():
        raise UserError(f"{path}: file is empty")
    if b"\x00" in raw[:65536]:
        raise UserError(f"{path}: looks like a binary file (contains NUL bytes), expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not valid UTF-8 (bad byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "convert it with `iconv -t utf-8` or scripts/clean_data.py"
        ) from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is not part of the text


def read_jsonl(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """The `text_field` of every record of a JSONL file (blank lines are skipped)."""
    path = Path(path)
    found = 0
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict) or text_field not in record:
            raise UserError(f"{path}:{number}: record has no {text_field!r} field (choose one with --text-field)")
        if not isinstance(record[text_field], str):
            raise UserError(f"{path}:{number}: field {text_field!r} is not a string")
        found += 1
        yield record[text_field]
    if not found:
        raise UserError(f"{path}: holds no JSONL records")


def read_documents(path: str | Path, glob: str | None = None, text_field: str = "text") -> Iterator[str]:
    """Every document behind `path`: a text file is one, a JSONL file one per record."""
    for file in text_files(path, glob):
        if file.suffix in JSONL_SUFFIXES:
            yield from read_jsonl(file, text_field)
        else:
            yield read_text_file(file)


def unescape(separator: str) -> str:
    """`\\n` and `\\t` typed on a command line mean a newline and a tab."""
    return separator.replace("\\n", "\n").replace("\\t", "\t")


def read_text(paths: str | Path | list[str | Path], separator: str = "\n\n", glob: str | None = None,
              text_field: str = "text") -> str:
    """Read files, directories and JSONL files as one text, documents joined by `separator`."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    docs = [doc for p in paths for doc in read_documents(p, glob, text_field)]
    text = unescape(separator).join(docs)
    if not text.strip():
        raise UserError(f"{', '.join(map(str, paths))}: no text in the documents")
    return text
