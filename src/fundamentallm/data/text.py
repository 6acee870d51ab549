"""Reading a user's text safely: one clear error for every way a text file can be unusable.

Training data can be a text file, a directory (every .txt and .md file below it, or the
files matching `--glob`), JSONL (one JSON object per line, its text in `--text-field`), a
Parquet file, or a Hugging Face `datasets` directory saved with `save_to_disk` (both read
by data/tables.py, the text in `--text-field`). Each file, JSONL record or table row is a
document; documents are joined with a separator.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fundamentallm.data.tables import TABLE_SUFFIXES, dataset_files, is_dataset_dir, read_table
from fundamentallm.textstream import UTF16_BOMS, DecodedFile, Found, split_on, stream_lines
from fundamentallm.tokenizers import EOS, Special
from fundamentallm.errors import UserError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl",)
STREAM_CHUNK_BYTES = 4 << 20


def text_files(path: str | Path, glob: str | None = None, validation: bool = False) -> list[Path]:
    """The files behind `path`: the file itself, a saved dataset's Arrow files (of its
    validation split when `validation`), or the data files below a directory (`.txt` and
    `.md`, or those matching `glob`), sorted so the order is reproducible."""
    path = Path(path)
    if is_dataset_dir(path):
        return dataset_files(path, validation)
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


def skipped_files(paths: str | Path | list[str | Path], glob: str | None = None) -> str | None:
    """What the directories among `paths` hold and training does not read, by suffix (".py: 2,
    .bin: 1"), so that a file left out is never left out without a word. Hidden files and
    directories (.git) are not counted."""
    counts: Counter[str] = Counter()
    for path in map(Path, [paths] if isinstance(paths, (str, Path)) else paths):
        if path.is_dir() and not is_dataset_dir(path):
            read = set(text_files(path, glob))
            counts.update(f.suffix or "no suffix" for f in path.rglob("*")
                          if f.is_file() and f not in read
                          and not any(part.startswith(".") for part in f.relative_to(path).parts))
    if not counts:
        return None
    by_suffix = ", ".join(f"{s}: {n:,}" for s, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return (f"{sum(counts.values()):,} file(s) not read ({by_suffix}): "
            + (f"only files matching --glob {glob!r} are read" if glob else "a directory's .txt and .md files "
               "are read; --glob '*.py' takes others"))


def looks_binary(path: Path) -> bool:
    """NUL bytes in the first 64 KB, and no UTF-16 byte-order mark (UTF-16 text is full of them)."""
    try:
        with path.open("rb") as f:
            head = f.read(65536)
    except OSError:
        return False  # reading it says what is wrong, with its own message
    return b"\x00" in head and not head.startswith(UTF16_BOMS)


def read_text_file(path: str | Path) -> str:
    """Read one UTF-8 text file; raise `UserError` if it is empty, binary or not UTF-8."""
    return "".join(stream_text_file(path))


def stream_text_file(path: str | Path, chunk_bytes: int = STREAM_CHUNK_BYTES) -> Iterator[str]:
    """`read_text_file` a piece at a time, with the same checks, in bounded memory."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file")
    if looks_binary(path):  # before decoding: a program's bytes are rarely valid UTF-8 either
        raise UserError(f"{path}: looks like a binary file (contains NUL bytes), expected UTF-8 text")
    seen, has_text = 0, False
    for text in DecodedFile(path, invalid="error", chunk_bytes=chunk_bytes):
        if seen < 65536 and "\x00" in text[:65536 - seen]:  # NUL is valid UTF-8, but not text
            raise UserError(f"{path}: looks like a binary file (contains NUL bytes), expected UTF-8 text")
        seen += len(text)
        has_text = has_text or not text.isspace()
        yield text
    if not has_text:
        raise UserError(f"{path}: file is empty")


def jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each record of a JSONL file, streamed; blank lines are
    skipped, and a line that is not JSON is a one-line error naming it."""
    for number, line in enumerate(stream_lines(stream_text_file(path)), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None


def read_jsonl(path: str | Path, text_field: str = "text") -> Iterator[str]:
    """The `text_field` of every record of a JSONL file (blank lines are skipped), streamed."""
    path = Path(path)
    found = 0
    for number, record in jsonl_records(path):
        if not isinstance(record, dict) or text_field not in record:
            raise UserError(f"{path}:{number}: record has no {text_field!r} field (choose one with --text-field)")
        if not isinstance(record[text_field], str):
            raise UserError(f"{path}:{number}: field {text_field!r} is not a string")
        found += 1
        yield record[text_field]
    if not found:
        raise UserError(f"{path}: holds no JSONL records")


def file_documents(file: Path, text_field: str) -> Iterator[str | Iterator[str]]:
    """The documents of one file: a text file is one (streamed, as pieces), a JSONL file one
    per record, a table one per row."""
    if file.suffix in JSONL_SUFFIXES:
        return read_jsonl(file, text_field)
    if file.suffix in TABLE_SUFFIXES:
        return read_table(file, text_field)
    return iter([stream_text_file(file)])


def read_documents(path: str | Path, glob: str | None = None, text_field: str = "text") -> Iterator[str]:
    """Every document behind `path`, each as one string."""
    for file in text_files(path, glob):
        for document in file_documents(file, text_field):
            yield document if isinstance(document, str) else "".join(document)


def unescape(separator: str) -> str:
    """`\\n` and `\\t` typed on a command line mean a newline and a tab."""
    return separator.replace("\\n", "\n").replace("\\t", "\t")


def data_files(paths: str | Path | list[str | Path], glob: str | None = None, validation: bool = False
               ) -> list[Path]:
    """Every file behind `paths`, in reading order (`validation`: a DatasetDict's validation split)."""
    return [f for p in ([paths] if isinstance(paths, (str, Path)) else paths)
            for f in text_files(p, glob, validation)]


DOCUMENT_END = object()  # in `document_pieces`: the document before it is complete


def document_pieces(paths: str | Path | list[str | Path], glob: str | None = None, text_field: str = "text",
                    validation: bool = False, doc_separator: str | None = None) -> Iterator[Any]:
    """The text behind `paths` in pieces, DOCUMENT_END after each document: a file, a JSONL
    record, a table row, or a part of any of them between two `doc_separator`s (removed)."""
    needles = [unescape(doc_separator)] if doc_separator else []
    for file in data_files(paths, glob, validation):
        for document in file_documents(file, text_field):
            for piece in split_on([document] if isinstance(document, str) else document, needles):
                yield DOCUMENT_END if isinstance(piece, Found) else piece
            yield DOCUMENT_END


def stream_text(paths: str | Path | list[str | Path], separator: str = "\n\n", glob: str | None = None,
                text_field: str = "text", validation: bool = False, *, doc_separator: str | None = None,
                eos: bool = False) -> Iterator[str]:
    """The text of files, directories, JSONL files and tables in pieces, documents joined by
    `separator`: what `read_text` returns, without holding it all. With `eos`, each document
    is followed by the end-of-text token instead (a `Special` piece). Empty documents are
    left out."""
    separator = unescape(separator)
    ended = in_document = False  # a document with text has ended / is being read
    for piece in document_pieces(paths, glob, text_field, validation, doc_separator):
        if piece is DOCUMENT_END:
            if in_document and eos:
                yield Special(EOS)
            ended, in_document = ended or in_document, False
        elif piece:
            if ended and not in_document and not eos:
                yield separator
            in_document = True
            yield piece


def read_text(paths: str | Path | list[str | Path], separator: str = "\n\n", glob: str | None = None,
              text_field: str = "text", validation: bool = False, doc_separator: str | None = None) -> str:
    """Read files, directories, JSONL files and tables as one text, documents joined by `separator`."""
    text = "".join(stream_text(paths, separator, glob, text_field, validation, doc_separator=doc_separator))
    if not text.strip():
        names = ", ".join(map(str, [paths] if isinstance(paths, (str, Path)) else paths))
        raise UserError(f"{names}: no text in the documents")
    return text
