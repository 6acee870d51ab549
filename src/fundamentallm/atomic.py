"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename.

A rename within one directory is atomic on POSIX and Windows, so a reader (or a resumed
run after a kill) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from fundamentallm.errors import UserError
from fundamentallm.textstream import DEFAULT_CHUNK_BYTES, DecodedFile


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temporary binary file, then move it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def finite_or_none(data: Any) -> Any:
    """NaN and infinity are not JSON: write them as null."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    return data


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n")


class TemporaryTextFile:
    """A UTF-8 file written in pieces beside `destination`, then renamed onto it or discarded.

    The rename is atomic within a directory, so a reader (or a rerun after a crash)
    sees the old destination or the complete new one, never half of one.
    """

    def __init__(self, destination: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        fd, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        self.path, self.chunk_bytes = Path(name), chunk_bytes
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.write = self.file.write

    def read(self) -> Iterable[str]:
        """What was written, as chunks; no more writing after this."""
        self.file.close()
        return DecodedFile(self.path, chunk_bytes=self.chunk_bytes) if self.path.stat().st_size else []

    def discard(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)

    def commit(self, destination: Path) -> None:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.path, destination)
        except OSError as exc:
            self.discard()
            raise UserError(f"{destination}: cannot write ({exc.strerror})") from None
