"""`fundamentallm evaluate` and `fundamentallm generate` on a checkpoint from a tiny run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from helpers import figures
from integration_helpers import run_cli, train

UNK = "\ufffd"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text) -> Path:
    root = tmp_path_factory.mktemp("model")
    data = root / "train.txt"
    data.write_text(tiny_text, encoding="utf-8")
    return train(data, root / "run", max_steps=30, warmup_steps=0, learning_rate=0.01)


@pytest.fixture(scope="module")
def vocabulary(tiny_text) -> set[str]:
    return set(tiny_text[:int(len(tiny_text) * 0.9)])  # the default 10% held out is not seen


def evaluate_json(capsys, checkpoint: Path, data: Path, *extra: str) -> dict:
    assert run_cli("evaluate", checkpoint, data, "--json", "--device", "cpu", *extra) == 0
    return json.loads(capsys.readouterr().out)


def generate(capsys, checkpoint: Path, *extra: str) -> tuple[str, str]:
    assert run_cli("generate", checkpoint, "--device", "cpu", *extra) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


# ---------------------------------------------------------------- evaluate
def test_evaluate_json(tmp_path, trained, tiny_text, capsys):
    data = tmp_path / "eval.txt"
    data.write_text(tiny_text[:5000])
    score = evaluate_json(capsys, trained / "final.pt", data)
    assert {"loss", "perplexity", "bits_per_char", "tokens"} <= score.keys()
    assert 0 < score["loss"] < math.log(len(set(tiny_text)) + 1) + 0.5  # learnt a little
    assert score["perplexity"] == pytest.approx(math.exp(score["loss"]), rel=1e-12)
    assert score["bits_per_char"] == pytest.approx(score["loss"] / math.log(2), rel=1e-12)
    assert score["tokens"] == 5000 - 1  # every character but the first is predicted once


def test_evaluate_human_output_matches_json(tmp_path, trained, tiny_text, capsys):
    data = tmp_path / "eval.txt"
    data.write_text(tiny_text[:3000])
    score = evaluate_json(capsys, trained / "final.pt", data)
    assert run_cli("evaluate", trained / "final.pt", "--data", data, "--device", "cpu") == 0
    text = capsys.readouterr().out
    assert f"loss {score['loss']:.4f}" in text and "tokens 2,999" in text


def test_evaluate_does_not_depend_on_batch_size(tmp_path, trained, tiny_text, capsys):
    data = tmp_path / "eval.txt"
    data.write_text(tiny_text[:2003])  # a short last window too
    one = evaluate_json(capsys, trained / "final.pt", data, "--batch-size", "1")
    many = evaluate_json(capsys, trained / "final.pt", data, "--batch-size", "64")
    assert one["tokens"] == many["tokens"] == 2002
    assert one["loss"] == pytest.approx(many["loss"], rel=1e-6)


def test_evaluate_skips_unknown_characters(tmp_path, trained, tiny_text, capsys):
    data = tmp_path / "eval.txt"
    text = "ΩΩ" + tiny_text[:1000] + "Ω"
    data.write_text(text)
    score = evaluate_json(capsys, trained / "final.pt", data)
    assert score["unknown"] == 2  # the first character is never a target
    assert score["tokens"] == len(text) - 1 - 2
    assert run_cli("evaluate", trained / "final.pt", data, "--device", "cpu") == 0
    assert "never seen in training" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["final.pt", "best_model.pt", "resume_checkpoint.pt"])
def test_every_checkpoint_evaluates(tmp_path, trained, tiny_text, capsys, name):
    data = tmp_path / "eval.txt"
    data.write_text(tiny_text[:500])
    assert evaluate_json(capsys, trained / name, data)["tokens"] == 499


def test_final_and_resume_checkpoint_score_the_same(tmp_path, trained, tiny_text, capsys):
    data = tmp_path / "eval.txt"
    data.write_text(tiny_text[:500])
    a = evaluate_json(capsys, trained / "final.pt", data)
    b = evaluate_json(capsys, trained / "resume_checkpoint.pt", data)
    assert figures(a) == figures(b)


# ---------------------------------------------------------------- generate
def test_same_seed_same_text(trained, capsys):
    a, _ = generate(capsys, trained / "final.pt", "--seed", "7", "--max-tokens", "60")
    b, _ = generate(capsys, trained / "final.pt", "--seed", "7", "--max-tokens", "60")
    c, _ = generate(capsys, trained / "final.pt", "--seed", "8", "--max-tokens", "60")
    assert a == b
    assert a != c


def test_long_generation_past_the_context(trained, vocabulary, capsys):
    out, _ = generate(capsys, trained / "final.pt", "--prompt", "KING:", "--max-tokens", "100",
                      "--seed", "1")
    assert out.startswith("KING:") and out.endswith("\n")
    new = out[len("KING:"):-1]
    assert len(new) >= 100  # context is 16: the cache must roll over several times
    assert set(new) <= vocabulary  # never <unk>, only characters seen in training


def test_prompt_longer_than_the_context(trained, capsys):
    prompt = "First Citizen: before we proceed any further"  # 44 characters > 16
    out, _ = generate(capsys, trained / "final.pt", "--prompt", prompt, "--max-tokens", "20",
                      "--seed", "1")
    assert out.startswith(prompt) and len(out) == len(prompt) + 20 + 1


def test_num_samples(trained, capsys):
    out, _ = generate(capsys, trained / "final.pt", "--prompt", "To", "--num-samples", "3",
                      "--max-tokens", "25", "--seed", "2")
    headers = re.findall(r"^--- sample (\d+) ---$", out, flags=re.M)
    assert headers == ["1", "2", "3"]
    samples = re.split(r"^--- sample \d+ ---\n", out, flags=re.M)[1:]
    assert len(samples) == 3
    for sample in samples:
        assert sample.startswith("To") and len(sample) == 2 + 25 + 1
    assert len(set(samples)) > 1  # independent samples


def test_unknown_prompt_characters(trained, vocabulary, capsys):
    out, err = generate(capsys, trained / "final.pt", "--prompt", "Ω and ☃", "--max-tokens", "30",
                        "--seed", "3")
    assert out.startswith("Ω and ☃")
    assert set(out[len("Ω and ☃"):-1]) <= vocabulary
    assert UNK not in out
    assert err.startswith("note:") and "2" in err


def test_temperature_zero_is_greedy_and_deterministic(trained, capsys):
    a, _ = generate(capsys, trained / "final.pt", "--temperature", "0", "--max-tokens", "40")
    b, _ = generate(capsys, trained / "final.pt", "--temperature", "0", "--max-tokens", "40")
    assert a == b
    # top-k 1 and a tiny top-p keep only the most likely token: greedy, whatever the seed
    k, _ = generate(capsys, trained / "final.pt", "--top-k", "1", "--max-tokens", "40", "--seed", "5")
    p, _ = generate(capsys, trained / "final.pt", "--top-p", "1e-9", "--max-tokens", "40",
                    "--seed", "6")
    assert k == a and p == a


def test_zero_tokens_prints_the_prompt(trained, capsys):
    out, _ = generate(capsys, trained / "final.pt", "--prompt", "Hi", "--max-tokens", "0")
    assert out == "Hi\n"


@pytest.mark.parametrize("flags", [
    ["--temperature", "-1"], ["--top-k", "0"], ["--top-p", "0"], ["--top-p", "1.5"],
    ["--num-samples", "0"], ["--max-tokens", "-1"], ["--prompt", ""],
])
def test_bad_sampling_options(trained, capsys, flags):
    assert run_cli("generate", trained / "final.pt", "--device", "cpu", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_greedy_generation_matches_recomputing_without_cache(trained, capsys):
    """The KV cache is an optimisation only: greedy text equals recomputing every position
    from scratch under the same context policy (when full, keep the most recent half)."""
    import torch

    from fundamentallm.checkpoint import load_model

    prompt, new_tokens = "ROMEO:", 60  # 6 + 60 characters: the context (16) fills 5 times
    out, _ = generate(capsys, trained / "final.pt", "--prompt", prompt, "--temperature", "0",
                      "--max-tokens", str(new_tokens))
    model, tokenizer, cfg = load_model(trained / "final.pt")
    context = cfg.model.context_length
    text = tokenizer.encode(prompt)
    window = text[-context:]
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([window]))[0, -1]
            logits[tokenizer.unk_id] = float("-inf")
            token = int(logits.argmax())
            text.append(token)
            window = text[-(context // 2):] if len(window) == context else window + [token]
    assert out == prompt + tokenizer.decode(text[len(prompt):]) + "\n"


# ---------------------------------------------------------------- the run's validation split
def test_split_validation_scores_the_runs_own_validation_text_whole(tmp_path, tiny_text, capsys):
    train_file, val_file = tmp_path / "train.txt", tmp_path / "val.txt"
    train_file.write_text(tiny_text[:-3000], encoding="utf-8")
    val_file.write_text(tiny_text[-3000:], encoding="utf-8")
    out = train(train_file, tmp_path / "run", "--validation-data", val_file, "--json", quiet=False, max_steps=3,
                eval_iters=1, batch_size=2)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    # each evaluation scores a sample, and the summary says how much and how to score the whole
    assert "each evaluation scores a sample of 32 (1.1%: --eval-iters 1)" in start["validation"], start
    assert f"evaluate {out / 'final.pt'} --split validation" in start["validation"]
    whole = evaluate_json(capsys, out / "final.pt", val_file, "--precision", "fp32")
    assert run_cli("evaluate", out / "final.pt", "--split", "validation", "--json", "--precision", "fp32") == 0
    split = json.loads(capsys.readouterr().out)
    assert split["tokens"] == whole["tokens"] and split["loss"] == pytest.approx(whole["loss"], abs=1e-6)
    assert split["bits_per_char"] == pytest.approx(whole["bits_per_char"], rel=1e-3)


def test_split_validation_needs_a_split_and_no_other_text(tmp_path, tiny_text, capsys):
    text = tmp_path / "train.txt"
    text.write_text(tiny_text, encoding="utf-8")
    out = train(text, tmp_path / "run", max_steps=1, val_split=0)
    capsys.readouterr()
    assert run_cli("evaluate", out / "final.pt", "--split", "validation") == 2
    assert "the run had no validation text" in capsys.readouterr().err
    assert run_cli("evaluate", out / "final.pt", "--split", "validation", "--data", text) == 2
    assert "one of them" in capsys.readouterr().err
