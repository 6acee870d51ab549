"""Reading a user's text safely: one clear error for every way a text file can be unusable."""

from __future__ import annotations

from pathlib import Path

from fundamentallm.errors import UserError

TEXT_SUFFIXES = (".txt",)


def text_files(path: str | Path) -> list[Path]:
    """The files behind `path`: the file itself, or every `.txt` file below a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES)
        if not files:
            raise UserError(f"{path}: directory holds no .txt files")
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


def read_text(paths: str | Path | list[str | Path], separator: str = "\n\n") -> str:
    """Read files and/or directories of text, joined by `separator` in the order given."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files = [f for p in paths for f in text_files(p)]
    return separator.join(read_text_file(f) for f in files)
