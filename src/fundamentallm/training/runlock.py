"""One writer per run directory: an advisory lock held for as long as a command writes there.

Two runs writing one directory would interleave their checkpoints and metrics without a
word: a `--resume auto` started beside a live run continues from the live run's checkpoint,
and two fresh runs started together into a new directory both pass the "already holds a
run" check before either has written one. So a command that writes a run directory first
takes an exclusive lock on a file in it (`flock`, as pip and the Hugging Face hub cache do
through `filelock`): a second writer is refused in one line naming the holder, and
`--overwrite` never reaches the files of a live run.

The operating system releases the lock when its process ends, however it ends (kill -9
included): a lock left by a dead run is taken over without a word. The lock file stays (with
the last holder's process id and host, for the message); removing it while another process
may open it is the classic race of lock files, so a run's lock is removed only with a
directory this command created and left otherwise empty. An export's lock, beside its
target, is removed when the export is done (still held then: the target is complete). On a system without
`fcntl` (Windows) no lock is taken.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from fundamentallm.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked there
    fcntl = None

LOCK_NAME = ".fundamentallm.lock"


@contextmanager
def exclusive(directory: Path, lock_file: Path | None = None, what: str = "run") -> Iterator[None]:
    """Hold the lock of `directory` (created if missing) for the block: `lock_file`, by
    default LOCK_NAME inside it. Another holder: a UserError naming it. A `lock_file` of its
    own (an export's, beside its target) is removed when the block ends, its work done."""
    path = lock_file or directory / LOCK_NAME
    created = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Held open read-only: a file open for writing would keep its file system from being
        # remounted read-only, and flock needs no write access.
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"{directory}: cannot create the directory or its lock ({exc.strerror})") from None
    acquired = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                who = f"process {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
                raise UserError(f"{directory} is in use by another {what} ({who}); wait for it to finish, "
                                "or choose another directory") from None
        acquired = True
        with suppress(OSError):  # who holds it, for the message another writer gets (a courtesy)
            path.write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")
        yield
    finally:
        if acquired and lock_file is not None:  # removed while still held: the next opener makes a new one
            path.unlink(missing_ok=True)
        if acquired and created and {p.name for p in path.parent.iterdir()} <= {path.name}:
            # A command that stopped before writing anything (a one-line error about its input)
            # leaves no directory behind, as it did before it took a lock.
            path.unlink(missing_ok=True)
            path.parent.rmdir()
        os.close(fd)  # releases the lock

