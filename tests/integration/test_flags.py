"""Every training flag has its effect, seen against a baseline run that differs in that flag only."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import load_model
from fundamentallm.config import OptimConfig
from fundamentallm.data.batching import encode
from fundamentallm.scoring import total_loss
from fundamentallm.training import precision
from integration_helpers import assert_same_weights, load_pt, metrics, run_cli, summary, train

# The baseline: 6 steps, a record every step, no warmup, cosine schedule, validation every 3
# steps, seed 1337, gradient clip 1.0. Without warmup, step k of n (1-based) runs at progress
# k / n of the decay: step 1 is already a step below the peak, step n runs at min_lr.
BASE = {"max_steps": 6, "eval_interval": 3, "warmup_steps": 0, "log_interval": 1}
PEAK = OptimConfig().learning_rate  # the default --learning-rate
FLOOR = OptimConfig().min_lr  # the default --min-lr: 0, the decay ends at zero


def cosine_rates(steps: int, warmup: int = 0, floor: float = FLOOR) -> list[float]:
    """The recorded lr of steps 1..steps: warmup to the peak, then cosine down to `floor`,
    which the last step reaches."""
    return [PEAK * k / warmup if k <= warmup else
            floor + (PEAK - floor) * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (steps - warmup)))
            for k in range(1, steps + 1)]


def run(data: Path, out: Path, *extra: str, **overrides) -> Path:
    return train(data, out, *extra, **{**BASE, **overrides})


def lrs(out: Path) -> list[float]:
    return [r["lr"] for r in metrics(out)]


def loss_list(out: Path) -> list[float]:
    return [r["train_loss"] for r in metrics(out)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, corpus) -> Path:
    return run(corpus, tmp_path_factory.mktemp("baseline"))


def test_baseline_shape(baseline):
    records = metrics(baseline)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
    assert all("grad_norm" in r for r in records)
    assert records[0]["lr"] == pytest.approx(cosine_rates(6)[0], rel=1e-12) and records[0]["lr"] < PEAK
    assert records[-1]["lr"] == FLOOR == 0.0  # the last step at min_lr


def test_learning_rate(tmp_path, corpus, baseline):
    out = run(corpus, tmp_path, learning_rate=0.01)
    # The whole schedule scales with the peak (down to the same floor, 0).
    assert lrs(out) == pytest.approx([lr * 0.01 / PEAK for lr in lrs(baseline)], rel=1e-9)
    first, *rest = loss_list(out)
    assert first == loss_list(baseline)[0]  # same weights, same batch before the first update
    assert rest != loss_list(baseline)[1:]


def test_cosine_schedule_decays(baseline):
    rates = lrs(baseline)
    assert rates == pytest.approx(cosine_rates(6), rel=1e-12)
    assert all(a > b for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] == FLOOR  # min_lr defaults to 0
    # cosine: slow, fast, slow; the middle drops are the largest
    drops = [a - b for a, b in zip(rates, rates[1:])]
    assert drops[0] < drops[2] and drops[-1] < drops[2]


def test_constant_schedule_keeps_lr_after_warmup(tmp_path, corpus):
    out = run(corpus, tmp_path, lr_schedule="constant", warmup_steps=2)
    assert lrs(out) == pytest.approx([PEAK / 2, PEAK, PEAK, PEAK, PEAK, PEAK], rel=1e-12)


def test_linear_schedule_decays_evenly(tmp_path, corpus):
    rates = lrs(run(corpus, tmp_path, lr_schedule="linear"))
    # from the peak to min_lr in 6 equal drops, the first taken before step 1
    drop = (PEAK - FLOOR) / 6
    assert rates == pytest.approx([PEAK - k * drop for k in range(1, 7)], rel=1e-9)
    drops = [a - b for a, b in zip(rates, rates[1:])]
    assert drops == pytest.approx([drop] * 5, rel=1e-6)
    assert rates[-1] == pytest.approx(FLOOR, abs=1e-15)


def test_warmup_steps(tmp_path, corpus, baseline):
    out = run(corpus, tmp_path, warmup_steps=4, lr_schedule="constant")
    rates = lrs(out)
    assert rates[:4] == pytest.approx([PEAK * k / 4 for k in (1, 2, 3, 4)], rel=1e-12)
    assert rates[4:] == pytest.approx([PEAK, PEAK], rel=1e-12)
    # warmup then cosine: the peak on the last warmup step only, then decay to min_lr
    rates = lrs(run(corpus, tmp_path / "cos", warmup_steps=3, max_steps=8))
    assert rates == pytest.approx(cosine_rates(8, warmup=3), rel=1e-12)
    assert rates[0] == pytest.approx(PEAK / 3) and rates[2] == pytest.approx(PEAK)
    assert rates[3] < PEAK  # decay starts right after warmup
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))
    assert rates.count(max(rates)) == 1
    assert rates[-1] == FLOOR


def test_min_lr(tmp_path, corpus, baseline):
    floor = 1e-4
    rates = lrs(run(corpus, tmp_path, min_lr=floor))
    assert rates == pytest.approx(cosine_rates(6, floor=floor), rel=1e-12)
    assert all(r >= floor for r in rates)
    assert rates[-1] == pytest.approx(floor, rel=1e-12)  # the last step runs at --min-lr
    assert rates[-1] > lrs(baseline)[-1] == 0.0  # the default floor is 0
    # constant schedule ignores the floor
    assert set(lrs(run(corpus, tmp_path / "c", min_lr=floor, lr_schedule="constant"))) == {PEAK}


def test_weight_decay_applies_to_matrices_only(tmp_path, corpus):
    # After one step, the decoupled decay is the only difference: p -= lr * wd * p.
    # (GPT-2 init: zero-initialised projections would stay at zero under any decay. A floor
    # above 0: the only step is the last, which runs at --min-lr.)
    plain = load_pt(run(corpus, tmp_path / "a", weight_decay=0, max_steps=1, zero_init=False, min_lr=1e-3)
                    / "final.pt")["model"]
    decayed = load_pt(run(corpus, tmp_path / "b", weight_decay=1.0, max_steps=1, zero_init=False, min_lr=1e-3)
                      / "final.pt")["model"]
    changed = sorted(k for k in plain if not torch.equal(plain[k], decayed[k]))
    matrices = sorted(k for k, v in plain.items()
                      if v.dim() >= 2 and not k.startswith(("embed.", "head.")))
    assert changed == matrices  # the embedding, the head and norm gains are not decayed
    for k in matrices:
        assert decayed[k].norm() < plain[k].norm(), k


def test_gradient_clip(tmp_path, corpus, baseline):
    unclipped = run(corpus, tmp_path / "none", gradient_clip=0)
    assert not any("grad_norm" in r for r in metrics(unclipped))
    tight = run(corpus, tmp_path / "tight", gradient_clip=0.01)
    norms = [r["grad_norm"] for r in metrics(tight)]
    # grad_norm is the norm before clipping: at step 1 it does not depend on the clip value
    assert norms[0] == pytest.approx(metrics(baseline)[0]["grad_norm"], rel=1e-6)
    assert all(n > 0.01 for n in norms)
    a, b = loss_list(tight), loss_list(unclipped)
    assert a[0] == b[0] and a[2:] != b[2:]


def test_grad_accum_steps(tmp_path, corpus, baseline):
    accum = run(corpus, tmp_path / "accum", grad_accum_steps=2)
    assert [r["tokens"] for r in metrics(accum)] == [2 * r["tokens"] for r in metrics(baseline)]
    assert metrics(baseline)[0]["tokens"] == 4 * 16
    # 2 micro-batches of 4 see the windows one batch of 8 sees: the same run, up to rounding.
    big = run(corpus, tmp_path / "big", batch_size=8)
    assert loss_list(accum) == pytest.approx(loss_list(big), rel=1e-4)
    assert loss_list(accum)[0] != loss_list(baseline)[0]


def test_batch_size(tmp_path, corpus, baseline):
    out = run(corpus, tmp_path, batch_size=8)
    assert metrics(out)[0]["tokens"] == 8 * 16
    assert summary(out)["tokens"] == 6 * 8 * 16
    assert loss_list(out)[0] != loss_list(baseline)[0]


def test_dropout(tmp_path, corpus, baseline):
    out = run(corpus, tmp_path, dropout=0.2)
    assert loss_list(out)[0] != loss_list(baseline)[0]  # dropout acts in the first forward pass


def test_seed(tmp_path, corpus, baseline):
    other = run(corpus, tmp_path / "other", seed=1)
    assert loss_list(other)[0] != loss_list(baseline)[0]
    same = run(corpus, tmp_path / "same")
    assert loss_list(same) == loss_list(baseline)
    assert_same_weights(same / "final.pt", baseline / "final.pt")


def test_epochs(tmp_path, tiny_text):
    data = tmp_path / "short.txt"
    data.write_text(tiny_text[:1000])
    steps_per_epoch = ((1000 - 1) // 16) // 4  # windows of 16 tokens, 4 per step
    for epochs in (1, 3):
        out = run(data, tmp_path / f"e{epochs}", max_steps=None, epochs=epochs, val_split=0,
                  log_interval=100)
        assert summary(out)["steps"] == epochs * steps_per_epoch
        assert summary(out)["stop_reason"] == "epochs"
        assert summary(out)["epochs"] == epochs


def test_max_steps(tmp_path, corpus):
    out = run(corpus, tmp_path / "three", max_steps=3)
    assert summary(out)["steps"] == 3 and summary(out)["stop_reason"] == "max_steps"
    assert [r["step"] for r in metrics(out)] == [1, 2, 3]
    # epochs end a run before a larger step limit
    short = tmp_path / "short.txt"
    short.write_text(corpus.read_text()[:500])
    out = run(short, tmp_path / "epochs", max_steps=1000, epochs=1, val_split=0)
    assert summary(out)["stop_reason"] == "epochs" and summary(out)["steps"] == (499 // 16) // 4


def test_max_time(tmp_path, corpus):
    out = run(corpus, tmp_path, max_steps=None, epochs=100, max_time=0.5, log_interval=1000)
    s = summary(out)
    assert s["stop_reason"] == "max_time"
    assert 0.5 <= s["wall_time_s"] < 30
    assert 0 < s["steps"] < 100 * 281
    assert metrics(out)[-1]["step"] == s["steps"]
    assert load_pt(out / "resume_checkpoint.pt")["train_state"]["counters"]["step"] == s["steps"]


def test_eval_interval_and_eval_iters(tmp_path, corpus):
    out = run(corpus, tmp_path, eval_interval=2, eval_iters=3, max_steps=5, log_interval=100)
    records = metrics(out)
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4, 5]
    # The last validation loss is the mean over eval_iters * batch_size windows of the
    # held-out 10%, with the final weights.
    model, tokenizer, _ = load_model(out / "final.pt")
    text = corpus.read_text()
    val_ids = encode(tokenizer, text[int(len(text) * 0.9):])
    nats, scored, _ = total_loss(model, val_ids, 4, tokenizer.unk_id, max_windows=3 * 4)
    assert scored == 3 * 4 * 16
    assert records[-1]["val_loss"] == pytest.approx(nats / scored, rel=1e-5)
    more = run(corpus, tmp_path / "more", eval_interval=2, eval_iters=6, max_steps=5)
    assert metrics(more)[-1]["val_loss"] != records[-1]["val_loss"]


def test_log_interval(tmp_path, corpus):
    out = run(corpus, tmp_path, log_interval=2, max_steps=7, eval_interval=100)
    assert [r["step"] for r in metrics(out)] == [2, 4, 6, 7]  # and always the last step


@pytest.mark.parametrize("patience, stop_step", [(1, 2), (2, 3)])
def test_early_stopping(tmp_path, corpus, patience, stop_step):
    out = run(corpus, tmp_path, "--early-stopping", "--patience", str(patience),
              "--min-delta", "100", eval_interval=1, max_steps=20)
    s = summary(out)
    assert s["stop_reason"] == "early_stopping" and s["steps"] == stop_step
    # without --early-stopping the same run goes on
    out = run(corpus, tmp_path / "off", "--patience", "1", "--min-delta", "100",
              eval_interval=1, max_steps=4)
    assert summary(out)["stop_reason"] == "max_steps" and summary(out)["steps"] == 4


def test_small_improvements_stop_early_but_still_update_the_best_model(tmp_path, corpus):
    # As in Keras: an improvement of --min-delta or less does not reset the patience count,
    # yet it is still the lowest loss so far, which best_model.pt keeps.
    patience = 3
    out = run(corpus, tmp_path, "--early-stopping", "--patience", str(patience),
              "--min-delta", "0.5", eval_interval=1, max_steps=20)
    records = metrics(out)
    val = [r["val_loss"] for r in records]
    # every evaluation improved, each by far less than 0.5 (and all together too)
    assert all(0 < a - b < 0.5 for a, b in zip(val, val[1:])), val
    assert val[0] - val[-1] < 0.5
    s = summary(out)
    assert s["stop_reason"] == "early_stopping" and s["steps"] == 1 + patience
    assert all(r.get("best") is True for r in records)
    assert s["best_val_loss"] == val[-1] == min(val)
    assert_same_weights(out / "best_model.pt", out / "final.pt")  # the last, lowest-loss model
    counters = load_pt(out / "resume_checkpoint.pt")["train_state"]["counters"]
    assert counters["stopping_reference"] == val[0]  # only the first drop exceeded min-delta
    assert counters["best_val_loss"] == val[-1]
    assert counters["evals_without_improvement"] == patience
    # without a min-delta the same improvements each reset the count: no early stop
    out = run(corpus, tmp_path / "no-delta", "--early-stopping", "--patience", str(patience),
              eval_interval=1, max_steps=20)
    assert summary(out)["stop_reason"] == "max_steps" and summary(out)["steps"] == 20


def test_val_split_zero_disables_validation(tmp_path, corpus, capsys):
    out = run(corpus, tmp_path, "--json", val_split=0)
    assert not any("val_loss" in r for r in metrics(out))
    assert not (out / "best_model.pt").exists()
    assert summary(out)["best_val_loss"] is None and summary(out)["final_val_loss"] is None
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["train tokens"] == len(corpus.read_text())


def test_validation_data_file(tmp_path, corpus, capsys):
    held_out = tmp_path / "val.txt"
    held_out.write_text(corpus.read_text()[:2000])
    out = run(corpus, tmp_path / "run", "--json", validation_data=held_out, eval_iters=100,
              max_steps=3)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["train tokens"] == len(corpus.read_text())  # nothing split off
    records = metrics(out)
    assert [r["step"] for r in records if "val_loss" in r] == [3]
    assert (out / "best_model.pt").exists()
    # eval_iters * batch covers the whole file: the validation loss is the file's loss
    model, tokenizer, _ = load_model(out / "final.pt")
    nats, scored, _ = total_loss(model, encode(tokenizer, held_out.read_text()), 4,
                                 tokenizer.unk_id)
    assert records[-1]["val_loss"] == pytest.approx(nats / scored, rel=1e-5)


@contextmanager
def compute_dtypes(monkeypatch) -> Iterator[dict[str, set[torch.dtype]]]:
    """The dtypes of every nn.Linear output, and of the queries reaching attention, while a
    run trains in this block."""
    from fundamentallm.model import transformer

    seen: dict[str, set[torch.dtype]] = {"linear": set(), "attention": set()}
    attend = transformer.attend

    def watched_attend(q, *args, **kwargs):
        seen["attention"].add(q.dtype)
        return attend(q, *args, **kwargs)

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            seen["linear"].add(output.dtype)

    monkeypatch.setattr(transformer, "attend", watched_attend)
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def fast_native_bf16(monkeypatch) -> None:
    """Declare this CPU one with native bf16 that measures fast (as the Zen 5 CI machine is),
    whatever it really is."""
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 4.0)


def test_auto_precision_is_bf16_on_a_cpu_with_fast_native_bf16(tmp_path, corpus, monkeypatch, capsys):
    fast_native_bf16(monkeypatch)
    with compute_dtypes(monkeypatch) as seen:
        out = run(corpus, tmp_path / "auto", "--json", precision=None, max_steps=2)
    assert summary(out)["precision"] == "bf16"
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["precision"].startswith("bf16 autocast (auto: native CPU bf16")  # what, and why
    # every matmul of the forward (and of validation) ran in bf16, and so did attention
    assert seen == {"linear": {torch.bfloat16}, "attention": {torch.bfloat16}}
    assert all(math.isfinite(x) for x in loss_list(out))
    # the former spellings: --mixed-precision is auto, --no-mixed-precision fp32
    assert summary(run(corpus, tmp_path / "mixed", "--mixed-precision", precision=None,
                       max_steps=1))["precision"] == "bf16"
    assert summary(run(corpus, tmp_path / "plain", "--no-mixed-precision", precision=None,
                       max_steps=1))["precision"] == "fp32"


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16(tmp_path, corpus, monkeypatch, capsys):
    with compute_dtypes(monkeypatch) as seen:  # conftest: this CPU has no native bf16
        out = run(corpus, tmp_path / "auto", "--json", precision=None, max_steps=2)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert summary(out)["precision"] == "fp32" and "no native bf16" in start["precision"]
    assert seen == {"linear": {torch.float32}, "attention": {torch.float32}}


def test_forced_bf16_runs_in_bf16_and_keeps_the_loss_near_fp32(tmp_path, corpus, monkeypatch):
    with compute_dtypes(monkeypatch) as seen:
        bf16 = run(corpus, tmp_path / "bf16", precision="bf16", max_steps=4)
    assert summary(bf16)["precision"] == "bf16"
    assert seen == {"linear": {torch.bfloat16}, "attention": {torch.bfloat16}}
    fp32 = run(corpus, tmp_path / "fp32", precision="fp32", max_steps=4)
    assert loss_list(bf16) != loss_list(fp32)  # really another arithmetic
    assert abs(loss_list(bf16)[-1] - loss_list(fp32)[-1]) < 0.05


def test_forced_fp16_trains_with_a_grad_scaler_on_cpu(tmp_path, corpus, monkeypatch):
    with compute_dtypes(monkeypatch) as seen:
        out = run(corpus, tmp_path / "fp16", precision="fp16", max_steps=3)
    assert summary(out)["precision"] == "fp16" and seen["linear"] == {torch.float16}
    assert all(math.isfinite(x) for x in loss_list(out))
    # An enabled GradScaler saves its scale (a disabled one saves nothing), and it resumes.
    scaler = load_pt(out / "resume_checkpoint.pt")["train_state"]["scaler"]
    assert scaler["scale"] > 0
    plain = run(corpus, tmp_path / "fp32", max_steps=1)
    assert load_pt(plain / "resume_checkpoint.pt")["train_state"]["scaler"] == {}


def test_quiet_prints_nothing(tmp_path, corpus, capsys):
    run(corpus, tmp_path, max_steps=2)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_default_output_is_for_people(tmp_path, corpus, capsys):
    train(corpus, tmp_path, quiet=False, **{**BASE, "max_steps": 2})
    out = capsys.readouterr().out
    assert "FundamentaLLM training" in out and "Training finished" in out


def _strict_json(line: str):
    def reject(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(line, parse_constant=reject)


def test_json_lines(tmp_path, corpus, capsys):
    out = run(corpus, tmp_path, "--json", max_steps=4)
    lines = capsys.readouterr().out.splitlines()
    events = [_strict_json(line) for line in lines]
    assert all("event" in e for e in events)
    assert [e["event"] for e in events] == ["start"] + ["metrics"] * 4 + ["end"]
    assert [e["step"] for e in events[1:-1]] == [1, 2, 3, 4]
    assert events[-1]["steps"] == 4 and events[-1] == {"event": "end", **summary(out)}


def test_quiet_and_json_are_exclusive(tmp_path, corpus, capsys):
    assert run_cli("train", corpus, "-o", tmp_path, "--quiet", "--json", "--dry-run") == 2
    assert capsys.readouterr().err.startswith("error:")



@pytest.mark.parametrize("flag", ["beta1", "beta2"])
def test_adam_betas(tmp_path, corpus, baseline, flag):
    out = run(corpus, tmp_path, **{flag: 0.5})
    first, *rest = loss_list(out)
    assert first == loss_list(baseline)[0]  # same start; the moments only act from the update on
    assert rest != loss_list(baseline)[1:]


@pytest.mark.parametrize("interval, writes", [(2, 3), (100, 1)])
def test_checkpoint_interval(tmp_path, corpus, monkeypatch, interval, writes):
    from fundamentallm.training import checkpointer

    saved: list[str] = []
    real_save = checkpointer.save_checkpoint
    monkeypatch.setattr(checkpointer, "save_checkpoint",
                        lambda path, *a, **k: (saved.append(Path(path).name), real_save(path, *a, **k)))
    run(corpus, tmp_path, checkpoint_interval=interval)  # 6 steps; the last one always saves
    assert saved.count("resume_checkpoint.pt") == writes


@pytest.mark.parametrize("flags, warning", [
    (["--cooldown-fraction", "0.2"], "--cooldown-fraction applies only with --lr-schedule wsd"),
    (["--optimizer", "adamw", "--muon-lr", "0.02"], "--muon-lr applies only with --optimizer muon"),
    (["--optimizer", "adamw", "--muon-momentum", "0.8", "--muon-lr", "0.1"],
     "--muon-lr and --muon-momentum apply only with --optimizer muon"),
    (["--tie-embeddings", "--embedding-lr", "0.01"], "--embedding-lr applies only to an untied embedding"),
])
def test_settings_that_cannot_act_are_warned_about(tmp_path, corpus, capsys, flags, warning):
    run(corpus, tmp_path / "run", *flags, max_steps=1)
    assert f"warning: {warning}" in capsys.readouterr().err


def test_settings_that_act_bring_no_warning(tmp_path, corpus, capsys):
    run(corpus, tmp_path / "run", "--lr-schedule", "wsd", "--cooldown-fraction", "0.2", "--muon-lr", "0.02",
        max_steps=1)
    assert "warning" not in capsys.readouterr().err
