"""Parquet files and saved Hugging Face `datasets` directories as training data: they train
end to end, to the very losses of the same documents given as text, with --text-field,
through the token cache, and every problem (a missing column, text that is not text, a
missing split, no pyarrow) is one line."""

from __future__ import annotations

import sys

import pytest

from integration_helpers import losses, run_cli, sample_text, train

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()  # save_to_disk's bars would mix into the stderr the tests read

DOCS = [sample_text(30_000)[i:i + 3_000] for i in range(0, 30_000, 3_000)]  # ten documents
RUN = {"max_steps": 6, "log_interval": 1, "val_split": 0.1, "eval_interval": 6}


@pytest.fixture(scope="module")
def as_text(tmp_path_factory):
    """The same documents as one text file, separated by a marker that --doc-separator names."""
    path = tmp_path_factory.mktemp("text") / "docs.txt"
    path.write_text("@@@".join(DOCS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, as_text):
    """A table's rows are documents, each ended by the end-of-text token (--doc-boundary auto): the
    same token stream as the text file cut into documents by --doc-separator."""
    return losses(train(as_text, tmp_path_factory.mktemp("reference"), "--doc-separator", "@@@", **RUN))


def table(**columns):
    return pa.table({"id": list(range(len(DOCS))), "body": DOCS, **columns})


def test_a_parquet_file_trains_to_the_losses_of_the_same_text(tmp_path, reference):
    path = tmp_path / "docs.parquet"
    pq.write_table(table(), path, row_group_size=3)  # several row groups: read in batches
    out = train(path, tmp_path / "run", "--text-field", "body", **RUN)
    assert losses(out) == pytest.approx(reference, abs=0)


def test_a_saved_dataset_trains_to_the_losses_of_the_same_text(tmp_path, reference):
    directory = tmp_path / "ds"
    datasets.Dataset.from_dict({"text": DOCS, "n": list(range(len(DOCS)))}).save_to_disk(str(directory),
                                                                                           num_shards=2)
    out = train(directory, tmp_path / "run", **RUN)
    assert losses(out) == pytest.approx(reference, abs=0)


def test_a_dataset_dict_gives_train_and_validation_splits(tmp_path, capsys):
    directory = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCS[:8]}),
                          "validation": datasets.Dataset.from_dict({"text": DOCS[8:]})}).save_to_disk(str(directory))
    text = tmp_path / "val.txt"
    text.write_text("@@@".join(DOCS[8:]), encoding="utf-8")
    one = train(directory, tmp_path / "one", "--validation-data", directory, **RUN)
    two = train(tmp_path / "dd" / "train", tmp_path / "two", "--validation-data", text, "--doc-separator", "@@@",
                **RUN)
    assert losses(one) == pytest.approx(losses(two), abs=0)


def test_tables_go_through_the_token_cache(tmp_path, reference, capsys):
    path = tmp_path / "docs.parquet"
    pq.write_table(table(), path)
    cache = tmp_path / "cache"
    for expected in ("built", "reused"):
        out = train(path, tmp_path / expected, "--text-field", "body", "--token-cache", cache, "--json",
                    quiet=False, **RUN)
        assert f'"token cache": "{expected} {cache}' in capsys.readouterr().out
        assert losses(out) == pytest.approx(reference, abs=0)


def one_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def test_table_problems_are_one_line(tmp_path, capsys):
    path = tmp_path / "docs.parquet"
    pq.write_table(table(), path)
    assert run_cli("train", path, "-o", tmp_path / "a", "--quiet") == 2
    assert "no column 'text' (it has id, body); choose one with --text-field" in one_error(capsys)
    assert run_cli("train", path, "-o", tmp_path / "b", "--text-field", "id", "--quiet") == 2
    assert "column 'id' holds int64, not text" in one_error(capsys)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:200])
    assert run_cli("train", broken, "-o", tmp_path / "c", "--text-field", "body", "--quiet") == 2
    assert "broken.parquet: not a readable Parquet file" in one_error(capsys)
    directory = tmp_path / "dd"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCS})}).save_to_disk(str(directory))
    assert run_cli("train", directory, "-o", tmp_path / "d", "--validation-data",
                   directory, "--quiet") == 2
    assert "a DatasetDict without a 'validation' or 'test' split (it has train)" in one_error(capsys)


def test_rows_without_text_are_skipped(tmp_path, reference):
    path = tmp_path / "docs.parquet"
    nulls = pa.table({"body": [None, *DOCS[:5], None, *DOCS[5:], None]})
    pq.write_table(nulls, path)
    out = train(path, tmp_path / "run", "--text-field", "body", **RUN)
    assert losses(out) == pytest.approx(reference, abs=0)


def test_without_pyarrow_the_error_names_the_extra(tmp_path, capsys, monkeypatch):
    path = tmp_path / "docs.parquet"
    pq.write_table(table(), path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow now fails
    assert run_cli("train", path, "-o", tmp_path / "run", "--text-field", "body", "--quiet") == 2
    assert "needs pyarrow: pip install 'fundamentallm[data]'" in one_error(capsys)
