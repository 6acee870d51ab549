"""Custom datasets (directories, --glob, JSONL), the BPE and byte tokenizers end to end,
`fundamentallm tokenizer ...` and `fundamentallm data split`."""

from __future__ import annotations

import json

import pytest

from fundamentallm.tokenizers import tokenizer_from_dict
from integration_helpers import (
    assert_one_line_error,
    load_pt,
    losses,
    run_cli,
    run_process,
    sample_text,
    summary,
    tiny_args,
    train,
)

TEXT = sample_text(24_000)


@pytest.fixture
def docs(tmp_path):
    """A directory: two text documents (one nested, one Markdown) and a file to ignore."""
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text(TEXT[:12_000])
    (root / "sub" / "b.md").write_text(TEXT[12_000:])
    (root / "notes.csv").write_text("id,value\n1,2\n")
    return root


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "data.jsonl"
    with path.open("w") as f:
        for i in range(0, len(TEXT), 1_000):
            f.write(json.dumps({"id": i, "body": TEXT[i:i + 1_000]}) + "\n")
        f.write("\n")  # blank lines are skipped
    return path


def start_record(capsys) -> dict:
    return json.loads(capsys.readouterr().out.splitlines()[0])


def score(checkpoint, data, capsys, *extra) -> dict:
    capsys.readouterr()
    assert run_cli("evaluate", checkpoint, data, "--json", "--device", "cpu", *extra) == 0
    return json.loads(capsys.readouterr().out)


def test_directory_trains_on_txt_and_md_joined_by_the_separator(tmp_path, docs, capsys):
    out = train(docs, tmp_path / "run", "--json", quiet=False, val_split=0)
    joined = TEXT[:12_000] + "\n\n" + TEXT[12_000:]  # a.txt, then sub/b.md; not the .csv
    assert start_record(capsys)["train tokens"] == len(joined)
    result = score(out / "final.pt", docs, capsys)
    assert result["tokens"] == len(joined) - 1 - result["unknown"]


def test_glob_and_separator_choose_and_join_the_documents(tmp_path, docs, capsys):
    train(docs, tmp_path / "run", "--json", "--glob", "*.md", "--separator", "\\n", quiet=False,
          val_split=0)
    assert start_record(capsys)["train tokens"] == len(TEXT) - 12_000
    train(docs, tmp_path / "run2", "--json", "--separator", "\\n---\\n", "--doc-boundary", "none", quiet=False,
          val_split=0)
    assert start_record(capsys)["train tokens"] == len(TEXT) + len("\n---\n")
    train(docs, tmp_path / "run3", "--json", quiet=False, val_split=0)  # two files: two documents, each ended
    record = start_record(capsys)
    assert record["train tokens"] == len(TEXT) + 2 and "each ends with <|endoftext|>" in record["documents"]


def test_jsonl_trains_and_evaluates_with_its_text_field(tmp_path, jsonl, capsys):
    out = train(jsonl, tmp_path / "run", "--json", "--text-field", "body", quiet=False, val_split=0)
    docs = -(-len(TEXT) // 1_000)
    assert start_record(capsys)["train tokens"] == len(TEXT) + docs  # each record ended by the end-of-text token
    # evaluate reads the JSONL as the run did (its --text-field is in the checkpoint): the same documents
    result = score(out / "final.pt", jsonl, capsys)
    assert result["tokens"] == len(TEXT) + docs - 1 - result["unknown"]
    assert result["characters"] == len(TEXT) - 1 - result["unknown"]


@pytest.mark.parametrize("line, message", [
    ("{not json", "data.jsonl:2: not valid JSON"),
    ('{"text": "x"}', "data.jsonl:2: record has no 'body' field"),
    ('{"body": 3}', "data.jsonl:2: field 'body' is not a string"),
])
def test_bad_jsonl_is_a_one_line_error(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"body": TEXT[:5000]}) + "\n" + line + "\n")
    result = run_process("train", path, "--text-field", "body", "-o", tmp_path / "run", *tiny_args())
    assert message in assert_one_line_error(result)


def test_empty_directory_and_unmatched_glob_are_errors(tmp_path, docs):
    (tmp_path / "empty").mkdir()
    assert "no .txt or .md files" in assert_one_line_error(
        run_process("train", tmp_path / "empty", *tiny_args()))
    assert "no files matching '*.json'" in assert_one_line_error(
        run_process("train", docs, "--glob", "*.json", *tiny_args()))


@pytest.mark.parametrize("kind", ["bpe", "byte"])
def test_bpe_and_byte_models_train_evaluate_and_generate(tmp_path, kind, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    extra = ["--vocab-size", "300"] if kind == "bpe" else []
    out = train(data, tmp_path / "run", "--tokenizer", kind, *extra, max_steps=10)
    tokenizer = load_pt(out / "final.pt")["tokenizer"]
    assert tokenizer["kind"] == kind
    run = summary(out)
    assert run["tokenizer"] == kind
    # per character = per token / characters per token of the validation text
    val_text = TEXT[int(len(TEXT) * 0.9):]
    chars_per_token = len(val_text) / len(tokenizer_from_dict(tokenizer).encode(val_text))
    assert run["best_val_bits_per_char"] == pytest.approx(
        run["best_val_loss"] / 0.6931471805599453 / chars_per_token)
    result = score(out / "final.pt", data, capsys)
    assert result["unknown"] == 0
    total_bits = result["bits_per_char"] * result["characters"]
    assert total_bits == pytest.approx(result["bits_per_byte"] * result["bytes"])
    assert total_bits == pytest.approx(result["loss"] * result["tokens"] / 0.6931471805599453)
    if kind == "bpe":
        assert result["tokens"] < 0.8 * result["characters"]  # 44 merges already pay
    capsys.readouterr()
    assert run_cli("generate", out / "final.pt", "--prompt", "ROMEO 🙂", "--max-tokens", "20",
                   "--seed", "1") == 0
    output = capsys.readouterr()
    assert output.out.startswith("ROMEO 🙂") and "never seen" not in output.err


def test_vocab_size_without_bpe_is_an_error(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    result = run_process("train", data, "--vocab-size", "300", *tiny_args())
    assert "--vocab-size applies to --tokenizer bpe only" in assert_one_line_error(result)
    result = run_process("train", data, "--tokenizer", "bpe", "--vocab-size", "100", *tiny_args())
    assert "at least 256" in assert_one_line_error(result)


def test_tokenizer_command_trains_encodes_decodes_and_reports(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    tok = tmp_path / "tok.json"
    assert run_cli("tokenizer", "train", data, "--vocab-size", "320", "-o", tok) == 0
    assert "bpe, 320 tokens" in capsys.readouterr().out
    assert run_cli("tokenizer", "encode", tok, "To be, or not to be") == 0
    ids = capsys.readouterr().out.split()
    assert 0 < len(ids) < len("To be, or not to be")
    assert run_cli("tokenizer", "decode", tok, *ids) == 0
    assert capsys.readouterr().out == "To be, or not to be\n"
    assert run_cli("tokenizer", "info", tok, "--data", data) == 0
    info = capsys.readouterr().out
    assert "type bpe, vocabulary 320 tokens" in info and "characters/token" in info
    # a checkpoint's tokenizer is inspected the same way
    out = train(data, tmp_path / "run", "--tokenizer", "byte", max_steps=1)
    assert run_cli("tokenizer", "encode", out / "final.pt", "é") == 0
    assert capsys.readouterr().out.split() == ["195", "169"]
    assert "between 0 and 319" in assert_one_line_error(run_process("tokenizer", "decode", tok, "999"))


def test_data_split_by_lines_and_chars_is_contiguous_and_complete(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("".join(f"line {i}\n" for i in range(100)))
    assert run_cli("data", "split", data, "--val", "0.1", "--test", "0.05") == 0
    parts = [(tmp_path / f"{n}.txt").read_text() for n in ("train", "val", "test")]
    assert [p.count("\n") for p in parts] == [85, 10, 5]
    assert "".join(parts) == data.read_text()
    assert parts[1].startswith("line 85\n")
    out = tmp_path / "chars"
    assert run_cli("data", "split", data, "--by", "chars", "--val", "0.25", "-o", out) == 0
    train_text, val_text = (out / "train.txt").read_text(), (out / "val.txt").read_text()
    assert train_text + val_text == data.read_text() and len(val_text) == round(len(data.read_text()) / 4)


def test_data_split_shuffled_is_seeded_and_keeps_every_line(tmp_path):
    data = tmp_path / "corpus.txt"
    lines = [f"line {i}\n" for i in range(200)]
    data.write_text("".join(lines))
    picks = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        assert run_cli("data", "split", data, "--shuffle", "--seed", str(seed), "-o", tmp_path / name) == 0
        picks[name] = (tmp_path / name / "val.txt").read_text()
        train_lines = (tmp_path / name / "train.txt").read_text().splitlines(keepends=True)
        val_lines = picks[name].splitlines(keepends=True)
        assert sorted(train_lines + val_lines) == sorted(lines) and len(val_lines) == 20
        assert val_lines == sorted(val_lines, key=lines.index)  # original order kept
    assert picks["a"] == picks["b"] != picks["c"]
    assert picks["a"] != "".join(lines[180:])  # not the contiguous tail


def test_data_split_by_documents(tmp_path, jsonl):
    text = tmp_path / "docs.txt"
    text.write_text("".join(f"doc {i} first line\ndoc {i} second\n\n\n" for i in range(10)))
    assert run_cli("data", "split", text, "--by", "documents", "--val", "0.2") == 0
    val = (tmp_path / "val.txt").read_text()
    assert val == "doc 8 first line\ndoc 8 second\n\ndoc 9 first line\ndoc 9 second\n\n"
    out = tmp_path / "j"
    assert run_cli("data", "split", jsonl, "--by", "documents", "--text-field", "body", "-o", out) == 0
    assert (out / "val.txt").read_text().startswith(TEXT[22_000:22_100])


def test_data_split_refuses_to_overwrite_and_bad_fractions(tmp_path):
    data = tmp_path / "corpus.txt"
    data.write_text("".join(f"line {i}\n" for i in range(50)))
    assert run_cli("data", "split", data) == 0
    assert "already exist" in assert_one_line_error(run_process("data", "split", data))
    assert "together below 1" in assert_one_line_error(
        run_process("data", "split", data, "--val", "0.6", "--test", "0.5", "-o", tmp_path / "x"))
    assert "--by lines or documents" in assert_one_line_error(
        run_process("data", "split", data, "--by", "chars", "--shuffle", "-o", tmp_path / "y"))
    assert run_cli("data", "split", data, "--overwrite") == 0


def test_token_cache_trains_like_memory_and_is_reused(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    cache = tmp_path / "cache"
    memory = losses(train(data, tmp_path / "memory", "--token-cache", "off", max_steps=6, log_interval=1))
    capsys.readouterr()
    first = train(data, tmp_path / "cached", "--json", "--token-cache", cache, quiet=False, max_steps=6,
                  log_interval=1)
    assert start_record(capsys)["token cache"].startswith(f"built {cache}")
    assert losses(first) == memory  # same tokens, same batches, same losses
    train(data, tmp_path / "again", "--json", "--token-cache", cache, quiet=False, max_steps=2)
    assert start_record(capsys)["token cache"].startswith(f"reused {cache}")
    # a resumed run reads the cache too: the entry the first run built (its tokenizer trained there), not a new one
    train(data, tmp_path / "cached", "--resume", "--json", "--token-cache", cache, quiet=False, max_steps=8,
          log_interval=1)
    assert start_record(capsys)["token cache"].startswith(f"reused {cache}")
    assert sorted(losses(tmp_path / "cached"))[-1] == 8
    # and so does scoring the run's whole validation split
    assert run_cli("evaluate", tmp_path / "cached" / "final.pt", "--split", "validation", "--json",
                   "--precision", "fp32") == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > 0
    assert len([entry for entry in cache.iterdir() if not entry.name.startswith(".")]) == 1


def test_evaluate_text_field_overrides_the_runs(tmp_path, jsonl, capsys):
    out = train(jsonl, tmp_path / "run", "--text-field", "body", val_split=0)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"content": TEXT[:3000]}) + "\n")
    assert score(out / "final.pt", other, capsys, "--text-field", "content")["characters"] <= 2999
    message = assert_one_line_error(run_process("evaluate", out / "final.pt", other, "--device", "cpu"))
    assert "record has no 'body' field" in message


def test_tokenizer_encode_show_tokens_lists_each_tokens_text(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    out = train(data, tmp_path / "run", "--tokenizer", "byte", max_steps=1)
    capsys.readouterr()
    assert run_cli("tokenizer", "encode", out / "final.pt", "hé", "--show-tokens") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "104 195 169"
    assert lines[1].split() == ["104", '"h"'] and len(lines) == 4


def test_unwritable_token_cache_is_a_one_line_error(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    (tmp_path / "file").write_text("not a directory")
    result = run_process("train", data, "--token-cache", tmp_path / "file" / "cache", *tiny_args())
    assert "cannot write the token cache" in assert_one_line_error(result)
