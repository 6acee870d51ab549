"""What a run trained on, kept in its training state, so that `--resume` on other data is caught.

A fingerprint holds, for the training files, the validation files and a paraphrase file
(--augment-file): how many there are, their bytes, a digest of their contents in reading
order, and for the first `LISTED` each file's name, size and digest (to say which one
changed); then the validation split and the tokens the text made. The token counts catch
a data setting (a separator, a JSONL field) that reads the same files into other tokens.

Files are compared by content: data moved to another directory is the same data. The
tokenizer needs no entry: a resumed run always takes its tokenizer from the checkpoint.

The digests are the ones the token cache keys its entries by (data/tokens.py), so a cached
corpus is read once for both. A large file's digest is remembered (in the user's cache, under
its device, inode, path, size and modification time, as make and git trust them), so a run
that starts again on an unchanged gigabyte does not read it all to know so.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fundamentallm.atomic import WriteFailed, write_text
from fundamentallm.tokenizers import Special, Tokenizer

LISTED = 100  # files named one by one in a fingerprint; a larger corpus is compared as a whole
REMEMBERED_BYTES = 8 << 20  # files from this size have their digests remembered (smaller ones read in ms)
GROUPS = (("train", "the training data"), ("validation", "the validation data"), ("augment", "the --augment-file"))


def file_digest(path: Path) -> str:
    """A digest of a file's bytes, read in blocks (a corpus need not fit in memory)."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return "blake2b-128:" + digest.hexdigest()


def remembered_digest(path: Path, memo: Path | None) -> str:
    """file_digest, remembered in `memo` (a directory) for a large file while it is unchanged."""
    stat = path.stat()
    if memo is None or stat.st_size < REMEMBERED_BYTES:
        return file_digest(path)
    identity = f"{stat.st_dev}:{stat.st_ino}:{os.path.realpath(path)}"
    record = memo / (hashlib.blake2b(identity.encode(), digest_size=16).hexdigest() + ".json")
    state = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        saved = json.loads(record.read_text())
        if {k: saved.get(k) for k in state} == state and isinstance(saved.get("digest"), str):
            return saved["digest"]
    except (OSError, ValueError, AttributeError):
        pass  # not remembered (or unreadable): read the file
    digest = file_digest(path)
    try:
        memo.mkdir(parents=True, exist_ok=True)
        write_text(record, json.dumps({**state, "digest": digest}))
    except (OSError, WriteFailed):
        pass  # a read-only cache: the digest is just not remembered
    return digest


def files_record(files: list[Path], memo: Path | None = None) -> dict[str, Any]:
    """Count, bytes and digest of a group of files, the first LISTED of them by name."""
    listed, whole = [], hashlib.blake2b(digest_size=16)
    size = 0
    for file in files:
        digest, nbytes = remembered_digest(file, memo), file.stat().st_size
        whole.update(digest.encode())
        size += nbytes
        if len(listed) < LISTED:
            listed.append({"name": str(file), "bytes": nbytes, "digest": digest})
    return {"files": len(files), "bytes": size, "digest": whole.hexdigest(), "listed": listed}


def fingerprint(train: list[Path], validation: list[Path], augment: list[Path], val_split: float | None,
                memo: Path | None = None) -> dict[str, Any]:
    """The fingerprint of a run's inputs; `val_split` None when the validation text is its own
    files; `memo`: where large files' digests are remembered. The token counts are added once
    known (`with_tokens`)."""
    return {"train": files_record(train, memo), "validation": files_record(validation, memo),
            "augment": files_record(augment, memo), "val_split": val_split}


def with_tokens(record: dict[str, Any], train_tokens: int, val_tokens: int | None) -> dict[str, Any]:
    return {**record, "train_tokens": int(train_tokens), "val_tokens": None if val_tokens is None else int(val_tokens)}


def changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between the data a run trained on and the data it is given now, one
    phrase each; empty when it is the same data."""
    found = []
    for group, what in GROUPS:
        before, after = saved.get(group) or {}, now.get(group) or {}
        if before.get("digest") != after.get("digest"):
            found.append(f"{what} changed: {file_changes(before, after)}")
    if saved.get("val_split") != now.get("val_split"):
        found.append(f"the validation split changed ({split_phrase(saved.get('val_split'))} → "
                     f"{split_phrase(now.get('val_split'))})")
    if not found:
        for part in ("train", "val"):
            if saved.get(f"{part}_tokens") != now.get(f"{part}_tokens"):
                found.append(f"the same files make other tokens ({saved.get(f'{part}_tokens')} → "
                             f"{now.get(f'{part}_tokens')} {part} tokens: a data setting such as --separator changed)")
                break
    return found


def file_changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Which files of a group differ, by name where both lists name them all."""
    old = {f["name"]: f for f in before.get("listed", [])}
    new = {f["name"]: f for f in after.get("listed", [])}
    complete = len(old) == before.get("files") and len(new) == after.get("files")
    totals = f"{before.get('files', 0)} file(s), {before.get('bytes', 0):,} bytes → {after.get('files', 0)}, " \
             f"{after.get('bytes', 0):,}"
    if not complete:
        return totals
    if sorted(f["digest"] for f in old.values()) == sorted(f["digest"] for f in new.values()):
        return "the same files in another order"
    moved = {f["digest"] for f in old.values()} & {f["digest"] for f in new.values()}
    parts = [f"{name} is new" for name, f in new.items() if name not in old and f["digest"] not in moved]
    parts += [f"{name} is gone" for name, f in old.items() if name not in new and f["digest"] not in moved]
    parts += [f"{name} {old[name]['bytes']:,} → {f['bytes']:,} bytes" + (
              "" if old[name]["bytes"] != f["bytes"] else " (other content)")
              for name, f in new.items() if name in old and old[name]["digest"] != f["digest"]]
    return "; ".join(parts[:3]) + (f"; {len(parts) - 3} more" if len(parts) > 3 else "") if parts else totals


def split_phrase(val_split: float | None) -> str:
    return "validation files of its own" if val_split is None else f"--val-split {val_split:g}"


def unrepresentable(tokenizer: Tokenizer, pieces: Iterable[str]) -> Counter[str]:
    """The characters of `pieces` the tokenizer has no token for (they become its unknown
    token), with their counts. Byte-level tokenizers represent everything."""
    missing: Counter[str] = Counter()
    if tokenizer.unk_id is None:
        return missing
    known: dict[str, bool] = {}
    for piece in pieces:
        if isinstance(piece, Special):
            continue
        for char in set(piece):
            if char not in known:
                known[char] = tokenizer.encode_text(char) != [tokenizer.unk_id]
            if not known[char]:
                missing[char] += piece.count(char)
    return missing


def named(missing: Counter[str], shown: int = 5) -> str:
    """'1,234 characters it has no token for (as <unk>): 'é' ×1,000, '☃' ×234', or ''."""
    if not missing:
        return ""
    top = ", ".join(f"{char!r} ×{n:,}" for char, n in missing.most_common(shown))
    more = f", and {len(missing) - shown} other(s)" if len(missing) > shown else ""
    return f"{sum(missing.values()):,} characters it has no token for, read as <unk>: {top}{more}"
