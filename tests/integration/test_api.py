"""The Python API (fundamentallm.train, load, Model): the same runs, texts and scores as the
command line, keyword settings checked as flags are, and a package that imports lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import fundamentallm as fl
from fundamentallm.config import Config
from helpers import figures
from integration_helpers import TINY, load_pt, losses, run_cli, summary, tiny_args, train

SETTINGS = {**TINY, "max_steps": 4, "eval_interval": 2}


@pytest.fixture(scope="module")
def api_run(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("api") / "run"
    result = fl.train(corpus, output_dir=str(out), progress="silent", **SETTINGS)
    return out, result


def test_train_with_keyword_settings_is_the_cli_run(api_run, corpus, tmp_path):
    out, result = api_run
    assert result == summary(out) and result["steps"] == 4 and result["output_dir"] == str(out)
    cli = train(corpus, tmp_path / "cli", max_steps=4, eval_interval=2)
    assert losses(out) == losses(cli)  # same seed, same data, same settings: the same losses
    assert load_pt(out / "final.pt")["config"]["model"]["model_dim"] == TINY["model_dim"]


def test_a_config_object_and_settings_on_top(corpus, tmp_path):
    cfg = Config()
    cfg.model.num_layers = 1
    cfg.optim.learning_rate = 0.002
    out = tmp_path / "from-config"
    fl.train(corpus, config=cfg, output_dir=str(out), progress="silent", **{**SETTINGS, "num_layers": 2})
    saved = load_pt(out / "final.pt")["config"]
    assert saved["model"]["num_layers"] == 2  # the keyword wins over the Config
    assert saved["optim"]["learning_rate"] == 0.002  # the Config's own setting is kept


def test_a_yaml_config_by_path(corpus, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  model_dim: 24\n  num_heads: 2\n", encoding="utf-8")
    out = tmp_path / "from-yaml"
    fl.train(corpus, config=config, output_dir=str(out), progress="silent",
             **{k: v for k, v in SETTINGS.items() if k not in ("model_dim", "num_heads")})
    assert load_pt(out / "final.pt")["config"]["model"]["model_dim"] == 24


@pytest.mark.parametrize("settings, message", [
    ({"modle_dim": 64}, "unknown setting 'modle_dim' (did you mean 'model_dim'?)"),
    ({"model_dim": "wide"}, "model_dim: expected int, got 'wide'"),
    ({"learning_rate": -1.0}, "learning_rate"),
    ({"tokenizer": "words"}, "tokenizer: unknown value 'words'"),
])
def test_bad_settings_raise_user_error_naming_the_keyword(corpus, tmp_path, settings, message):
    with pytest.raises(fl.UserError, match=None) as caught:
        fl.train(corpus, output_dir=str(tmp_path / "never"), progress="silent", **settings)
    assert message in str(caught.value)
    assert not (tmp_path / "never").exists()  # refused before any work


def test_progress_must_be_a_console_mode(corpus, tmp_path):
    with pytest.raises(fl.UserError, match="progress 'loud'"):
        fl.train(corpus, output_dir=str(tmp_path / "x"), progress="loud")


def test_generate_matches_the_cli(api_run, capsys):
    out, _ = api_run
    model = fl.load(out / "final.pt", device="cpu")
    text = model.generate("ROMEO:", max_tokens=40, seed=7, top_k=5)
    capsys.readouterr()
    assert run_cli("generate", out / "final.pt", "--prompt", "ROMEO:", "--max-tokens", "40", "--seed", "7",
                   "--top-k", "5", "--device", "cpu") == 0
    assert capsys.readouterr().out == "ROMEO:" + text + "\n"
    assert model.generate("ROMEO:", max_tokens=40, seed=7, top_k=5) == text  # seeded
    assert model.generate("ROMEO:", max_tokens=40, seed=8, top_k=5) != text
    samples = model.complete("ROMEO:", max_tokens=10, num_samples=3, seed=1)
    assert len(samples) == 3 and all(s.tokens == 10 or s.stop_reason == "stop" for s in samples)  # or its end of text
    with pytest.raises(fl.UserError, match="unknown option 'temprature'"):
        model.generate("x", temprature=0.5)
    with pytest.raises(fl.UserError, match="complete"):
        model.generate("x", num_samples=2)


def test_evaluate_matches_the_cli(api_run, corpus, capsys):
    out, _ = api_run
    model = fl.load(out / "final.pt", device="cpu")
    score = model.evaluate(corpus)
    capsys.readouterr()
    assert run_cli("evaluate", out / "final.pt", "--data", corpus, "--json", "--device", "cpu") == 0
    assert figures(json.loads(capsys.readouterr().out)) == figures(score.to_dict())
    assert figures(model.evaluate(text=corpus.read_text(encoding="utf-8")).to_dict()) == figures(score.to_dict())
    with pytest.raises(fl.UserError, match="give a file to score, or text="):
        model.evaluate()
    for bad in (0, -3, 2.5, True):
        with pytest.raises(fl.UserError, match="batch_size must be a positive whole number"):
            model.evaluate(corpus, batch_size=bad)
    with pytest.raises(fl.UserError, match="no such checkpoint"):
        fl.load(corpus.parent / "missing.pt")


def test_model_export_and_load_of_the_export(api_run, corpus, tmp_path):
    pytest.importorskip("safetensors")
    out, _ = api_run
    model = fl.load(out / "final.pt", device="cpu")
    with pytest.raises(fl.UserError, match="dtype 'fp8': choose one of fp32, bf16"):
        model.export(tmp_path / "never", dtype="fp8")
    assert not (tmp_path / "never").exists()
    report = model.export(tmp_path / "exported")
    assert (tmp_path / "exported" / "model.safetensors").is_file() and report.bytes > 0
    again = fl.load(tmp_path / "exported", device="cpu")  # a directory loads wherever a .pt does
    assert again.evaluate(corpus).loss == pytest.approx(model.evaluate(corpus).loss, abs=1e-5)
    assert "parameters" in repr(again) and again.device.type == "cpu"


def test_the_package_imports_lazily():
    code = ("import sys, fundamentallm as fl\n"
            "before = 'torch' in sys.modules\n"
            "names = set(dir(fl))\n"
            "fl.UserError\n"
            "print(before, 'torch' in sys.modules, sorted(set(fl.__all__) - names))\n"
            "fl.train\n"
            "print('torch' in sys.modules, 'fundamentallm.training.loop' in sys.modules)\n")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           timeout=120).stdout.splitlines()
    assert lines == ["False False []", "True True"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fl.nothing  # noqa: B018


def test_train_continues_a_run_with_resume(api_run, corpus, tmp_path):
    out = tmp_path / "resumed"
    fl.train(corpus, output_dir=str(out), progress="silent", **SETTINGS)
    result = fl.train(corpus, output_dir=str(out), resume=True, progress="silent", **{**SETTINGS, "max_steps": 6})
    assert result["steps"] == 6
    assert run_cli("train", corpus, "-o", out, *tiny_args(max_steps=8, eval_interval=2), "--resume", "--quiet") == 0
    assert summary(out)["steps"] == 8


def test_evaluate_refuses_an_unknown_precision(api_run):
    model = fl.load(api_run[0] / "final.pt", device="cpu")
    with pytest.raises(fl.UserError, match="precision must be auto, fp32 or bf16"):
        model.evaluate(text="hello world", precision="fp16")
