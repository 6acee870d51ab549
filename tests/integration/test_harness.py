"""`evaluate --tasks`: lm-evaluation-harness tasks on a checkpoint, offline, with the task file
the repository ships; our log-likelihoods against lm-eval's own Hugging Face backend on the
export of the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ROOT
from integration_helpers import assert_one_line_error, run_cli, run_process, sample_text, train

lm_eval = pytest.importorskip("lm_eval")
TASK = ROOT / "tasks" / "shakespeare_next_word.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("harness")
    (root / "text.txt").write_text(sample_text(20_000), encoding="utf-8")
    return train(root / "text.txt", root / "run", max_steps=30) / "final.pt"


def test_the_shipped_task_runs_offline_and_reports_accuracy_with_its_error(trained, capsys):
    assert run_cli("evaluate", trained, "--tasks", TASK, "--limit", "40", "--json") == 0
    figures = json.loads(capsys.readouterr().out)["tasks"]["shakespeare_next_word"]
    assert 0 <= figures["acc"] <= 1 and 0 < figures["acc_stderr"] < 0.5 and "acc_norm" in figures
    assert run_cli("evaluate", trained, "--tasks", TASK, "--limit", "40") == 0
    assert capsys.readouterr().out.startswith("shakespeare_next_word: acc ")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_our_loglikelihoods_equal_lm_evals_own_backend_on_the_export(tmp_path, kind):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from fundamentallm.checkpoint import load_model
    from fundamentallm.harness import harness_model

    (tmp_path / "text.txt").write_text(sample_text(20_000), encoding="utf-8")
    out = train(tmp_path / "text.txt", tmp_path / "run", "--tokenizer", kind, max_steps=10, precision="fp32")
    assert run_cli("export", out / "final.pt", tmp_path / "hf") == 0
    model, tokenizer, _ = load_model(out / "final.pt")
    ours = harness_model(model, tokenizer, precision="fp32")
    theirs = HFLM(pretrained=str(tmp_path / "hf"), dtype="float32", device="cpu", batch_size=1)
    pairs = [("ROMEO: I will ", "go"), ("", "First Citizen"), ("JULIET:", " O Romeo, Romeo!"),
             ("And so " * 30, "farewell")]  # the last longer than the context: cut at its start
    ours_long = ours.loglikelihood([Instance("loglikelihood", {}, ("A", " long continuation " * 4), 0)])
    assert ours_long[0][0] < 0  # a continuation longer than the window, scored a window at a time
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    for (a, greedy_a), (b, greedy_b) in zip(ours.loglikelihood(requests), theirs.loglikelihood(requests)):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
    rolling = [Instance("loglikelihood_rolling", {}, (sample_text(3_000)[i:i + 300],), i) for i in (0, 1000)]
    for a, b in zip(ours.loglikelihood_rolling(rolling), theirs.loglikelihood_rolling(rolling)):
        assert a == pytest.approx(b, abs=1e-3)  # a sum over ~300 tokens


@pytest.mark.parametrize("extra, message", [
    (["--tasks", str(TASK), "--data", "x.txt"], "score a text (--data) or run benchmark tasks (--tasks), one of them"),
    (["--tasks", "no_such_task_anywhere"], "unknown task 'no_such_task_anywhere'"),
    (["--tasks", "missing.yaml"], "--tasks missing.yaml: no such task file"),
])
def test_bad_task_requests_are_one_line_errors(trained, tmp_path, extra, message):
    result = run_process("evaluate", trained, *extra, cwd=tmp_path)
    assert message in assert_one_line_error(result)


def test_limit_without_tasks_is_refused(trained, tmp_path):
    (tmp_path / "t.txt").write_text(sample_text(500))
    result = run_process("evaluate", trained, "--data", tmp_path / "t.txt", "--limit", "5")
    assert "--limit applies to --tasks" in assert_one_line_error(result)
