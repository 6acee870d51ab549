"""Big corpora in tables: Parquet files, and Hugging Face `datasets` directories saved with
`Dataset.save_to_disk` / `DatasetDict.save_to_disk`, as training or validation input.

Each row's `--text-field` column is a document (rows whose value is null are skipped).
Tables are read a record batch at a time (pyarrow), so a corpus far larger than memory
streams through: into the token cache when it is large (data/tokens.py, with its progress
bar), and from there each process of a multi-process run reads only its own batches
through the cache's memory map.

A saved `datasets` directory is read as data with pyarrow: its `state.json` names its
Arrow files (IPC streams, in order). No code from the directory runs, and the `datasets`
library is not needed to read one. A `DatasetDict` directory (`dataset_dict.json`) gives its
"train" split as training data, and its "validation" split (else "test") as
`--validation-data`.

Needs pyarrow: `pip install fundamentallm[data]` (a one-line error says so).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fundamentallm.errors import UserError

TABLE_SUFFIXES = (".parquet", ".arrow")
BATCH_ROWS = 1024  # rows per record batch read: a few MB of text at most
VALIDATION_SPLITS = ("validation", "test")


def pyarrow() -> Any:
    try:
        import pyarrow as pa  # the [data] extra
        import pyarrow.parquet  # noqa: F401  (the submodule, loaded for pa.parquet)
    except ImportError:
        raise UserError("reading Parquet files and datasets directories needs pyarrow: "
                        "pip install 'fundamentallm[data]'") from None
    return pa


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def dataset_files(path: Path, validation: bool = False) -> list[Path]:
    """The Arrow files of a saved Dataset, or of the split a DatasetDict gives for this use."""
    if (path / "dataset_dict.json").is_file():
        splits = read_json(path / "dataset_dict.json").get("splits")
        if not isinstance(splits, list):
            raise UserError(f"{path / 'dataset_dict.json'}: malformed (no list of splits)")
        wanted = VALIDATION_SPLITS if validation else ("train",)
        split = next((s for s in wanted if s in splits), None)
        if split is None:
            raise UserError(f"{path}: a DatasetDict without a {' or '.join(map(repr, wanted))} split "
                            f"(it has {', '.join(map(str, splits))}); give that split's directory instead")
        path = path / split
    state = read_json(path / "state.json")
    files = state.get("_data_files")
    if not isinstance(files, list) or not files or not all(
            isinstance(f, dict) and isinstance(f.get("filename"), str) for f in files):
        raise UserError(f"{path / 'state.json'}: malformed (no list of data files)")
    found = []
    for entry in files:
        file = (path / entry["filename"]).resolve()
        if file.parent != path.resolve() or not file.is_file():  # names only, inside the directory
            raise UserError(f"{path}: data file {entry['filename']!r} is missing")
        found.append(file)
    return found


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: malformed (expected a JSON object)")
    return data


def record_batches(path: Path) -> Iterator[Any]:
    """The file's record batches: Parquet, or an Arrow IPC stream (a datasets shard)."""
    pa = pyarrow()
    try:
        if path.suffix == ".parquet":
            yield from pa.parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS)
            return
        with pa.memory_map(str(path)) as source:
            yield from pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable {'Parquet' if path.suffix == '.parquet' else 'Arrow'} "
                        f"file ({str(exc).splitlines()[0][:120]})") from None


def read_table(path: Path, text_field: str = "text") -> Iterator[str]:
    """The `text_field` of every row, streamed a batch at a time."""
    pa, found = pyarrow(), 0
    for batch in record_batches(path):
        if text_field not in batch.schema.names:
            raise UserError(f"{path}: no column {text_field!r} (it has {', '.join(batch.schema.names)}); "
                            "choose one with --text-field")
        column = batch.column(text_field)
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise UserError(f"{path}: column {text_field!r} holds {column.type}, not text")
        for value in column.to_pylist():
            if value is not None:
                found += 1
                yield value
    if not found:
        raise UserError(f"{path}: holds no rows with text in {text_field!r}")
