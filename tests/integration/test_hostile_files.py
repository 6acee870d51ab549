"""Hostile files: a file built to run code when it is opened is refused in one line, and its
code never runs. Each payload would create a marker file; the marker must never appear.

The trust model these tests hold (README, "What is safe to open"): checkpoints are read
with `torch.load(weights_only=True)`, configs with a YAML loader that builds only plain
values, tokenizers and Hugging Face configs as JSON data, weights as safetensors; no Python
code that arrives with a file is ever imported or run.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from integration_helpers import load_pt, run_cli, tiny_args, train


class Payload:
    """Unpickling this runs `open(marker, "w")`: what a malicious .pt would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def model(tmp_path_factory, corpus) -> Path:
    return train(corpus, tmp_path_factory.mktemp("model"), max_steps=2)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a payload ran"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def test_the_payload_is_real(tmp_path, marker):
    """Proof that the payload would run if unpickled unsafely (then the marker is removed)."""
    path = tmp_path / "evil.pt"
    torch.save({"model": Payload(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()


@pytest.mark.parametrize("where", ["whole file", "inside a checkpoint"])
def test_a_pickle_payload_in_a_pt_file_is_refused_everywhere(tmp_path, model, corpus, capsys, marker, where):
    evil = tmp_path / "evil.pt"
    if where == "whole file":
        torch.save(Payload(marker), evil)
    else:  # a real checkpoint with one entry swapped for the payload
        payload = load_pt(model / "final.pt")
        payload["tokenizer"] = Payload(marker)
        torch.save(payload, evil)
    commands = [
        ["evaluate", evil, corpus],
        ["generate", evil, "--max-tokens", "2"],
        ["train", "--resume", evil],
        ["train", corpus, "-o", tmp_path / "tuned", *tiny_args(), "--init-from", evil],
        ["export", evil, tmp_path / "exported"],
        ["tokenizer", "encode", evil, "hello"],
        ["serve", evil, "--port", "0"],
    ]
    for argv in commands:
        assert run_cli(*argv) == 2, argv
        line = one_error_line(capsys)
        assert "evil.pt: not a readable checkpoint: refused, as loading it would call " in line, (argv, line)


@pytest.mark.parametrize("tag", [
    "!!python/object/apply:builtins.open ['{marker}', 'w']",
    "!!python/object/new:builtins.open ['{marker}', 'w']",
    "!!python/name:os.system",
])
def test_a_yaml_config_with_python_tags_is_refused(tmp_path, corpus, capsys, marker, tag):
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"model:\n  model_dim: {tag.format(marker=marker)}\n")
    assert run_cli("train", corpus, "-o", tmp_path / "run", "--config", evil, *tiny_args()) == 2
    line = one_error_line(capsys)
    assert "evil.yaml" in line
    assert not (tmp_path / "run").exists()


def test_a_sweep_space_with_python_tags_is_refused(tmp_path, corpus, capsys, marker):
    evil = tmp_path / "space.yaml"
    evil.write_text(f"learning_rate: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    assert run_cli("sweep", corpus, "--space", evil, "-o", tmp_path / "sweep", "--trials", "1") == 2
    assert "space.yaml" in one_error_line(capsys)


@pytest.mark.parametrize("content", [
    "[1, 2, 3]",
    '{"kind": "char"}',
    '{"kind": "bpe", "merges": "not a list"}',
    '{"kind": "os.system", "args": ["touch x"]}',
    '{"kind": "char", "chars": {"a": 1}}',
    "not json at all",
], ids=["list", "char without chars", "bad merges", "unknown kind", "chars of the wrong type", "not json"])
def test_a_tokenizer_file_that_is_not_a_tokenizer_is_refused(tmp_path, capsys, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    assert run_cli("tokenizer", "encode", path, "hello") == 2
    assert one_error_line(capsys).startswith(f"error: {path}: ")


def exported(model: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "hf"
    assert run_cli("export", model / "final.pt", directory) == 0
    return directory


def plant_remote_code(directory: Path, marker: Path, model_type: str) -> None:
    """A config.json asking for remote code, and the code, which would create the marker."""
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (directory / "config.json").write_text(json.dumps(config))
    code = f"open({str(marker)!r}, 'w').close()\n"
    for name in ("evil.py", "configuration_fundamentallm.py", "modeling_fundamentallm.py", "__init__.py"):
        (directory / name).write_text(code)


def test_a_model_directory_asking_for_remote_code_is_refused(tmp_path, model, corpus, capsys, marker):
    directory = exported(model, tmp_path)
    plant_remote_code(directory, marker, "llama")
    for argv in (["import", directory, tmp_path / "x.pt"], ["evaluate", directory, corpus],
                 ["train", corpus, "-o", tmp_path / "tuned", *tiny_args(), "--init-from", directory]):
        assert run_cli(*argv) == 2, argv
        assert "asks for remote code (auto_map), which FundamentaLLM never runs" in one_error_line(capsys)


def test_our_own_remote_code_is_read_as_data_never_run(tmp_path, corpus, marker):
    """An export of a variant no standard architecture fits (ReLU² MLPs) carries our
    modelling code for transformers; FundamentaLLM loads the directory from its config and
    weights, and the Python files beside them (here, payloads) are never imported."""
    model = train(corpus, tmp_path / "relu2", max_steps=1, activation="relu2")
    directory = exported(model, tmp_path)
    assert json.loads((directory / "config.json").read_text())["model_type"] == "fundamentallm"
    code = f"open({str(marker)!r}, 'w').close()\n"
    for name in ("configuration_fundamentallm.py", "modeling_fundamentallm.py"):
        (directory / name).write_text(code)
    assert run_cli("evaluate", directory, corpus) == 0
    assert run_cli("import", directory, tmp_path / "imported.pt") == 0


def test_a_pickled_optimizer_state_in_a_resume_checkpoint_is_refused(tmp_path, model, capsys, marker):
    run = tmp_path / "run"
    run.mkdir()
    for path in model.iterdir():
        (run / path.name).write_bytes(path.read_bytes())
    payload = load_pt(run / "resume_checkpoint.pt")
    payload["train_state"]["optimizer"]["state"] = Payload(marker)
    torch.save(payload, run / "resume_checkpoint.pt", pickle_module=pickle)
    assert run_cli("train", "-o", run, "--resume", "--quiet") == 2
    line = one_error_line(capsys)
    assert "resume_checkpoint.pt: not a readable checkpoint: refused, as loading it would call" in line
    assert os.listdir(run)  # the run's other files are untouched
