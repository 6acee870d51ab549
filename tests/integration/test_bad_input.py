"""Bad input: exit status 2, one `error:` line on stderr, never a traceback.

The cases of the brief run as a user would, in real processes (status and stderr as the
shell sees them); the processes are independent, so one module fixture starts them all,
two at a time, and each parametrized test checks its own result. More cases run in-process
(`cli.main`), which reports errors the same way and costs no interpreter start-up.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import seal

from integration_helpers import (
    assert_one_line_error, load_pt, run_cli, run_process, sample_text, summary, tiny_args, train,
)

TRAIN = ["train", "{good}", "-o", "{tmp}/out", *tiny_args(max_steps=1)]

# case id: (argv with {tmp}/{good} placeholders, a fragment the error line must hold)
PROCESS_CASES: dict[str, tuple[list[str], str]] = {
    "missing data file": (["train", "{tmp}/missing.txt", *tiny_args()], "no such file"),
    "empty file": (["train", "{tmp}/empty.txt", *tiny_args()], "empty"),
    "binary file": (["train", "{tmp}/binary.txt", *tiny_args()], "binary"),
    "non-UTF-8 file": (["train", "{tmp}/latin1.txt", *tiny_args()], "UTF-8"),
    "model-dim 0": ([*TRAIN, "--model-dim", "0"], "--model-dim"),
    "batch-size -1": ([*TRAIN, "--batch-size", "-1"], "--batch-size"),
    "num-heads 3 of model-dim 32": ([*TRAIN, "--num-heads", "3"], "--num-heads"),
    "lr-schedule bogus": ([*TRAIN, "--lr-schedule", "bogus"], "bogus"),
    "dropout 1.5": ([*TRAIN, "--dropout", "1.5"], "--dropout"),
    "context longer than the text": (["train", "{tmp}/short.txt", *tiny_args(val_split=0)],
                                     "--context-length"),
    "missing checkpoint": (["evaluate", "{tmp}/nothing.pt", "{good}"], "no such checkpoint"),
    "foreign checkpoint": (["evaluate", "{tmp}/foreign.pt", "{good}"], "not a FundamentaLLM"),
    "random-bytes checkpoint": (["evaluate", "{tmp}/random.pt", "{good}"], "checkpoint"),
    "no command": ([], "COMMAND"),
}

IN_PROCESS_CASES: dict[str, tuple[list[str], str]] = {
    "whitespace-only file": (["train", "{tmp}/blank.txt", *tiny_args()], "empty"),
    "directory without text": (["train", "{tmp}/nodir", *tiny_args()], "no .txt or .md files"),
    "validation text too short": (["train", "{tmp}/short.txt", *tiny_args(val_split=0.05)],
                                  "validation"),
    "min-lr above lr": ([*TRAIN, "--min-lr", "0.5"], "--min-lr"),
    "not a number": ([*TRAIN, "--learning-rate", "fast"], "--learning-rate"),
    "unknown flag": ([*TRAIN, "--model-dimension", "32"], "--model-dimension"),
    "bad device": ([*TRAIN, "--device", "tpu"], "--device"),
    "truncated checkpoint": (["evaluate", "{tmp}/truncated.pt", "{good}"], "checkpoint"),
    "mismatched checkpoint": (["evaluate", "{tmp}/mismatched.pt", "{good}"], "do not match"),
    "evaluate binary file": (["evaluate", "{tmp}/model/final.pt", "{tmp}/binary.txt"], "binary"),
    "evaluate one character": (["evaluate", "{tmp}/model/final.pt", "{tmp}/one.txt"], "2 tokens"),
    "evaluate a directory": (["evaluate", "{tmp}/model/final.pt", "{tmp}/nodir"], "directory"),
    "evaluate without data": (["evaluate", "{tmp}/model/final.pt"], "--data"),
    "evaluate batch-size 0": (["evaluate", "{tmp}/model/final.pt", "{good}", "--batch-size", "0"],
                              "--batch-size"),
    "generate from corrupt checkpoint": (["generate", "{tmp}/random.pt"], "checkpoint"),
    "generate from foreign checkpoint": (["generate", "{tmp}/foreign.pt"], "not a FundamentaLLM"),
    "resume from foreign checkpoint": (["train", "--resume", "{tmp}/foreign.pt"],
                                       "not a FundamentaLLM"),
    "unknown config key": ([*TRAIN, "--config", "{tmp}/bad.yaml"], "model.model_dimension"),
    "diverging training": (["train", "{good}", "-o", "{tmp}/diverged",
                            *tiny_args(max_steps=40, learning_rate=1000, muon_lr=1000, gradient_clip=0,
                                       warmup_steps=0, log_interval=1, weight_decay=1), "--quiet"], "loss became"),
    "early stopping with nothing to watch": ([*TRAIN, "--early-stopping", "--val-split", "0"],
                                             "--early-stopping needs validation data"),
    "init-from with resume": (["train", "{good}", "-o", "{tmp}/model", "--resume", "--init-from",
                               "{tmp}/model/final.pt"], "does not apply with --resume"),
    "serve on port 70000": (["serve", "{tmp}/model/final.pt", "--port", "70000"],
                            "--port must be between 0 and 65535"),
    "decode a non-number": (["tokenizer", "decode", "{tmp}/model/final.pt", "12", "x"], "invalid int"),
    "tokenizer train without output": (["tokenizer", "train", "{good}"], "--output"),
    "generate with prompt and prompt file": (["generate", "{tmp}/model/final.pt", "--prompt", "a",
                                              "--prompt-file", "{good}"], "not allowed with"),
    "config not YAML": ([*TRAIN, "--config", "{tmp}/binary.txt"], "config"),
    "config not a mapping": ([*TRAIN, "--config", "{tmp}/list.yaml"], "list.yaml"),
    "export a corrupt checkpoint": (["export", "{tmp}/random.pt", "{tmp}/exported"], "checkpoint"),
    "export over a file": (["export", "{tmp}/model/final.pt", "{good}"], "exists and is not empty"),
    "export with a bad dtype": (["export", "{tmp}/model/final.pt", "{tmp}/x", "--dtype", "fp8"], "invalid choice"),
    "import a directory without a config": (["import", "{tmp}/nodir", "{tmp}/x.pt"], "no config.json"),
    "import a text file": (["import", "{good}", "{tmp}/x.pt"], "not a Hugging Face model directory"),
    "init-from a plain directory": ([*TRAIN, "--init-from", "{tmp}/nodir"], "not a model directory"),
    "the original's final model name": (["generate", "{tmp}/model/final_model.pt"], "writes final.pt"),
    "too many kv heads": ([*TRAIN, "--num-kv-heads", "3"], "--num-kv-heads 3 does not divide --num-heads"),
    "serve beyond loopback without a key": (["serve", "{tmp}/model/final.pt", "--host", "0.0.0.0"],
                                            "set an API key"),
}


def make_inputs(tmp: Path, good_text: str) -> Path:
    good = tmp / "good.txt"
    good.write_text(good_text, encoding="utf-8")
    (tmp / "empty.txt").write_bytes(b"")
    (tmp / "blank.txt").write_bytes(b" \n\n\t \n")
    (tmp / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (tmp / "latin1.txt").write_bytes("café au lait, crème brûlée\n".encode("latin-1") * 20)
    (tmp / "nodir").mkdir()
    (tmp / "nodir" / "notes.csv").write_text("not a .txt or .md file")
    (tmp / "short.txt").write_text("too short")  # 9 tokens; context 16 needs 17
    (tmp / "bad.yaml").write_text("model:\n  model_dimension: 32\n")
    (tmp / "list.yaml").write_text("- model_dim\n- 32\n")
    (tmp / "one.txt").write_text("x")
    torch.save({"x": 1}, tmp / "foreign.pt")
    (tmp / "random.pt").write_bytes(random.Random(0).randbytes(4096))
    model = train(good, tmp / "model", max_steps=1)
    data = (model / "final.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    payload = load_pt(model / "final.pt")
    payload["config"]["model"]["model_dim"] = 64
    payload["config"]["model"]["num_heads"] = 4
    seal(payload)  # well formed, checksum and all: the weights just do not fit the config
    torch.save(payload, tmp / "mismatched.pt")
    return good


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_text) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("bad")
    return tmp, make_inputs(tmp, tiny_text[:3000])


def argv_of(cases: dict, case: str, inputs: tuple[Path, Path]) -> list[str]:
    tmp, good = inputs
    return [a.format(tmp=tmp, good=good) for a in cases[case][0]]


@pytest.fixture(scope="module")
def results(inputs):
    def run(case: str):
        return run_process(*argv_of(PROCESS_CASES, case, inputs), timeout=120, cwd=inputs[0])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(PROCESS_CASES, pool.map(run, PROCESS_CASES)))


@pytest.mark.parametrize("case", list(PROCESS_CASES))
def test_bad_input_in_a_real_process(results, case):
    line = assert_one_line_error(results[case])
    assert PROCESS_CASES[case][1] in line, line
    assert results[case].stdout == ""


@pytest.mark.parametrize("case", list(IN_PROCESS_CASES))
def test_bad_input_in_process(inputs, capsys, monkeypatch, case):
    monkeypatch.chdir(inputs[0])
    assert run_cli(*argv_of(IN_PROCESS_CASES, case, inputs)) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert IN_PROCESS_CASES[case][1] in lines[0], lines[0]
    assert captured.out == ""


# ---------------------------------------------------------------- once bugs, now fixed
# In-process: an exception escaping cli.main is the traceback a user would see.
def assert_clean_exit(rc: int, capsys, allowed=(2,)) -> str:
    assert rc in allowed
    err = capsys.readouterr().err
    if rc == 2:
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("below", [False, True])
def test_output_dir_that_is_a_file(tmp_path, text_file, capsys, below):
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("I am a file")
    out = not_a_dir / "sub" if below else not_a_dir
    rc = run_cli("train", text_file, "-o", out, *tiny_args(max_steps=1), "--quiet")
    err = assert_clean_exit(rc, capsys)
    assert f"--output-dir {out}" in err
    assert not_a_dir.read_text() == "I am a file"  # left alone


def test_large_seed(tmp_path, text_file, capsys):
    # accepted: the sampler's per-epoch seed is reduced modulo 2**63
    out = tmp_path / "run"
    rc = run_cli("train", text_file, "-o", out, *tiny_args(max_steps=1), "--seed", str(10**14),
                 "--quiet")
    assert_clean_exit(rc, capsys, allowed=(0,))
    assert summary(out)["steps"] == 1


def test_largest_seed_is_accepted(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    rc = run_cli("train", text_file, "-o", out, *tiny_args(max_steps=2), "--seed", str(2**63 - 1),
                 "--quiet")
    assert_clean_exit(rc, capsys, allowed=(0,))
    assert summary(out)["steps"] == 2


@pytest.mark.parametrize("seed", [-1, 2**63, 10**30])
def test_seed_out_of_range_is_refused(tmp_path, text_file, capsys, seed):
    rc = run_cli("train", text_file, "-o", tmp_path / "run", *tiny_args(max_steps=1),
                 f"--seed={seed}", "--quiet")
    err = assert_clean_exit(rc, capsys)
    assert "--seed" in err and "2**63" in err and str(seed) in err, err
    assert not (tmp_path / "run").exists()


def test_generate_seed_out_of_range_is_refused(inputs, capsys):
    tmp, _ = inputs
    rc = run_cli("generate", tmp / "model" / "final.pt", "--prompt", "The", "--max-tokens", "3",
                 "--seed", str(2**64))
    err = assert_clean_exit(rc, capsys)
    assert "--seed" in err


# ---------------------------------------------------------------- absurd values
def test_a_shape_that_cannot_fit_is_refused_before_the_data_is_read(tmp_path, monkeypatch, capsys):
    text = tmp_path / "train.txt"
    text.write_text(sample_text(2_000), encoding="utf-8")

    def never(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr("fundamentallm.training.setup.load_tokens", never)
    argv = ["train", text, "-o", tmp_path / "run", "--model-dim", "65536", "--num-layers", "1024",
            "--num-heads", "1024"]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: this run needs at least") and "\n" not in err, err
    assert "TB" in err and "parameters" in err and "cpu has" in err, err
    assert not (tmp_path / "run").exists()


def test_a_yaml_value_beyond_its_range_names_the_key(tmp_path, capsys):
    text = tmp_path / "train.txt"
    text.write_text(sample_text(2_000), encoding="utf-8")
    config = tmp_path / "run.yaml"
    config.write_text("model:\n  num_layers: 99999999999999999999\n", encoding="utf-8")
    assert run_cli("train", text, "--config", config, "-o", tmp_path / "run") == 2
    assert capsys.readouterr().err.strip() == (f"error: {config}: model.num_layers must be at most 1,024 "
                                               "(got 99,999,999,999,999,999,999)")
    config.write_text("optim:\n  learning_rate: .nan\n", encoding="utf-8")
    assert run_cli("train", text, "--config", config, "-o", tmp_path / "run") == 2
    assert "optim.learning_rate must be a finite number (got nan)" in capsys.readouterr().err
