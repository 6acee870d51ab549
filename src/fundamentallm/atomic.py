"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename.

A rename within one directory is atomic on POSIX and Windows, so a reader (or a resumed
run after a kill) sees either the old file or the new one, never half of one. The temporary
file is made private (mkstemp: 0600); before the rename it gets the mode a plain `open()`
would have given it under the process's umask (0644 under umask 022), so that what a run
writes can be read by whoever may read the directory.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable

from fundamentallm.errors import UserError
from fundamentallm.textstream import DEFAULT_CHUNK_BYTES, DecodedFile


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: once, at import, before any thread
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def public_mode(directory: bool = False) -> int:
    """The mode `open()` (or `mkdir`) would give a new file (directory) under the umask."""
    return (0o777 if directory else 0o666) & ~_UMASK


class WriteFailed(UserError):
    """A file could not be written (a full disk, a read-only or vanished directory): one line
    naming the file, the cause and, for a full disk, the space it needs."""

    def __init__(self, path: Path, error: OSError, needed: int | None):
        self.path, self.errno = path, error.errno
        cause = error.strerror or str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            free = free_bytes(path.parent)
            cause += (f": {readable_bytes(free)} free" if free is not None else "") + (
                f", about {readable_bytes(needed)} needed" if needed else "")
        self.cause = cause
        super().__init__(f"{path}: cannot write ({cause})")


class _WatchedFile:
    """A file whose first OSError on write is kept: some writers (torch.save) report a failed
    write as an unrelated error of their own, and the real cause must not be lost."""

    def __init__(self, file: BinaryIO):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None], expected_bytes: int | None = None) -> None:
    """Call `write(f)` on a temporary binary file, then move it to `path`. A write the system
    refuses (no space, read-only, no permission) is a `WriteFailed`; `path` is then untouched.
    `expected_bytes`: about how large the file will be, for the message when space runs out."""
    path = Path(path)
    tmp = None
    watched = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, public_mode())
        with os.fdopen(fd, "wb") as f:
            watched = _WatchedFile(f)
            write(watched)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            with suppress(OSError):
                Path(tmp).unlink()
        error = watched.error if watched is not None and watched.error else exc
        if isinstance(error, OSError) and error.errno is not None:
            raise WriteFailed(path, error, expected_bytes) from None
        raise


def free_bytes(directory: Path) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def readable_bytes(count: float) -> str:
    if count < 1000:
        return f"{int(count)} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        count /= 1000
        if count < 1000 or unit == "TB":
            return f"{count:.1f} {unit}"


def same_file(first: Path, second: Path) -> bool:
    """True when both paths name one file, including through links (samefile sees those): a
    command that writes a new file from an input must never write over that input."""
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return first.resolve() == second.resolve()


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
        os.chmod(name, public_mode())
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
