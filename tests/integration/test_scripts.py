"""The three data/experiment scripts, run as a user would: exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_script


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.txt"
    path.write_bytes("Hello\tworld\x07\r\nsecond\u00a0line\r\n\r\nlast".encode())
    return path


@pytest.fixture
def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(b"ab\x00cd")
    return {
        "missing": (tmp_path / "missing.txt", "no such file"),
        "empty": (tmp_path / "empty.txt", "file is empty"),
        "binary": (tmp_path / "binary.txt", "binary"),
    }


def test_analyze_data_human_and_json(sample):
    result = run_script("scripts/analyze_data.py", sample)
    assert result.returncode == 0, result.stderr
    assert "distinct characters" in result.stdout and "'\\u0007'" in result.stdout
    result = run_script("scripts/analyze_data.py", sample, "--json", "--top", "2")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["characters"], data["lines"], data["control_count"]) == (33, 4, 4)
    assert len(data["most_common"]) == 2


@pytest.mark.parametrize("case", ["missing", "empty"])  # non-UTF-8 and binary files are reported, not refused
def test_analyze_data_rejects_bad_input(bad_inputs, case):
    path, fragment = bad_inputs[case]
    assert_one_line_error(run_script("scripts/analyze_data.py", path), fragment)


def test_clean_data_writes_output_and_reports_counts(sample, tmp_path):
    out = tmp_path / "clean" / "out.txt"
    result = run_script("scripts/clean_data.py", sample, out, "--collapse-whitespace")
    assert result.returncode == 0, result.stderr
    assert out.read_text(encoding="utf-8") == "Hello world\nsecond\u00a0line\n\nlast\n"
    assert "control characters removed" in result.stdout
    assert "line endings normalised" in result.stdout


def test_clean_data_never_overwrites_its_input(sample):
    before = sample.read_bytes()
    assert_one_line_error(run_script("scripts/clean_data.py", sample, sample), "is the input file")
    assert_one_line_error(run_script("scripts/clean_data.py", sample, sample.parent / "." / sample.name), "is the input file")
    assert sample.read_bytes() == before


@pytest.mark.parametrize("case", ["missing", "empty", "binary"])
def test_clean_data_rejects_bad_input(bad_inputs, tmp_path, case):
    path, fragment = bad_inputs[case]
    assert_one_line_error(run_script("scripts/clean_data.py", path, tmp_path / "out.txt"), fragment)
    assert not (tmp_path / "out.txt").exists()


def write_run(directory: Path, best: float) -> None:
    directory.mkdir(parents=True)
    summary = {"best_val_loss": best, "final_val_loss": best, "final_train_loss": 1.0, "steps": 10,
               "epochs": 1.0, "tokens": 100, "wall_time_s": 1.0, "tokens_per_s": 100.0,
               "parameters": 1000, "stop_reason": "epochs", "device": "cpu", "precision": "fp32"}  # fmt: skip
    (directory / "summary.json").write_text(json.dumps(summary), encoding="utf-8")


def test_compare_experiments_table_json_and_warnings(tmp_path):
    write_run(tmp_path / "runs" / "worse", 2.0)
    write_run(tmp_path / "runs" / "better", 1.0)
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "metrics.json").write_text("[{", encoding="utf-8")
    result = run_script("scripts/compare_experiments.py", tmp_path / "runs")
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("better") < result.stdout.index("worse")
    assert result.stderr.startswith("warning: skipping") and "Traceback" not in result.stderr
    result = run_script("scripts/compare_experiments.py", tmp_path / "runs", "--json")
    assert result.returncode == 0, result.stderr
    assert [run["run"] for run in json.loads(result.stdout)] == ["better", "worse"]


def test_compare_experiments_errors(tmp_path):
    assert_one_line_error(run_script("scripts/compare_experiments.py", tmp_path / "missing"), "no such directory")
    assert_one_line_error(run_script("scripts/compare_experiments.py", tmp_path), "no runs found below")
    write_run(tmp_path / "r", 1.0)
    assert_one_line_error(run_script("scripts/compare_experiments.py", tmp_path, "--sort", "speed"), "cannot sort by")


def test_compare_experiments_on_real_runs(tmp_path, tiny_text):
    """Directories written by real tiny runs: the figures are the runs' own, best first."""
    from integration_helpers import summary, train

    data = tmp_path / "train.txt"
    data.write_text(tiny_text, encoding="utf-8")
    train(data, tmp_path / "runs" / "slow", max_steps=4, learning_rate=1e-4)
    train(data, tmp_path / "runs" / "fast", max_steps=4, learning_rate=1e-2, model_dim=48)
    result = run_script("scripts/compare_experiments.py", tmp_path / "runs", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["run"]: row for row in json.loads(result.stdout)}
    assert list(rows) == sorted(rows, key=lambda name: summary(tmp_path / "runs" / name)["best_val_loss"])
    for name, lr, dim in (("slow", 1e-4, 32), ("fast", 1e-2, 48)):
        written = summary(tmp_path / "runs" / name)
        row = rows[name]
        assert row["source"] == "summary.json" and row["steps"] == 4
        assert row["best_val_loss"] == pytest.approx(written["best_val_loss"])
        assert (row["learning_rate"], row["model_dim"], row["tokenizer"]) == (lr, dim, "char")
    table = run_script("scripts/compare_experiments.py", tmp_path / "runs")
    assert table.returncode == 0 and "slow" in table.stdout and "fast" in table.stdout


def test_make_chat_data_writes_questions_with_exact_answers(tmp_path):
    from helpers import sample_text

    (tmp_path / "text.txt").write_text(sample_text(30_000), encoding="utf-8")
    result = run_script("scripts/make_chat_data.py", tmp_path / "text.txt", tmp_path / "chats", "--questions", "50",
                        "--test-questions", "10", "--seed", "3")
    assert result.returncode == 0, result.stderr
    train = [json.loads(line) for line in (tmp_path / "chats/train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "chats/test.jsonl").read_text().splitlines()]
    assert len(train) == 50 and len(test) == 10
    for record in train + test:
        roles = [m["role"] for m in record["messages"]]
        assert roles[-1] == "assistant" and roles.count("user") == roles.count("assistant") in (1, 2)
        question, answer = record["messages"][-2]["content"], record["messages"][-1]["content"]
        subject = question.split(": ", 1)[1] if ": " in question else question.split("? ", 1)[1]
        expected = {"backwards": subject[::-1], "capitals": subject.upper(), "first": subject.split()[0],
                    "last": subject.split()[-1], "count": str(len(subject.split()))}[record["task"]]
        assert answer == expected
    held_out = sample_text(30_000)[27_000:]  # the test questions are about the last 10% of the text
    assert all(r["messages"][-2]["content"].split(": ", 1)[-1].split("? ", 1)[-1] in held_out for r in test
               if r["task"] in ("first", "last", "count"))
    again = run_script("scripts/make_chat_data.py", tmp_path / "text.txt", tmp_path / "again", "--questions", "50",
                       "--test-questions", "10", "--seed", "3")
    assert again.returncode == 0 and (tmp_path / "again/train.jsonl").read_text() == (
        tmp_path / "chats/train.jsonl").read_text()


def test_make_chat_data_refuses_text_too_short(tmp_path):
    (tmp_path / "short.txt").write_text("one two\n")
    result = run_script("scripts/make_chat_data.py", tmp_path / "short.txt", tmp_path / "out")
    assert "too short for a chat task" in assert_one_line_error(result)


def test_make_choice_task_writes_a_task_lm_eval_reads(tmp_path):
    from helpers import sample_text

    (tmp_path / "text.txt").write_text(sample_text(30_000), encoding="utf-8")
    result = run_script("scripts/make_choice_task.py", tmp_path / "text.txt", tmp_path / "task", "--questions", "20")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "task/shakespeare_next_word.jsonl").read_text().splitlines()]
    held_out = sample_text(30_000)[27_000:]
    assert len(records) == 20
    for record in records:
        assert len(record["choices"]) == 4 and len(set(record["choices"])) == 4
        right = record["choices"][record["answer"]]
        assert (record["context"] + right) in " ".join(held_out.split())  # the true next word of a held-out line
    assert "task: shakespeare_next_word" in (tmp_path / "task/shakespeare_next_word.yaml").read_text()
