#!/usr/bin/env python
"""The pictures of the documentation, made from real runs (none is drawn by hand).

Usage: python docs/make_figures.py [OUT_DIR] [--steps 600] [--data FILE]   (OUT_DIR: docs/images)

It trains one small model on the bundled Shakespeare sample through the real command
(`fundamentallm train ... --grad-check-interval`), then draws from that run and that model:

    loss_curve.png     the run's training and validation loss (its metrics.json)
    gradient_flow.png  the run's own gradient-flow plot (written by --grad-check-interval)
    attention.png      the causal attention weights of the trained model's heads on a line of text
    temperature.png    the trained model's next-token distribution at three temperatures
    rope.png           the trained model's rotary position tables, and that a query-key score
                       depends only on their distance (model/transformer.py RotaryPositions)
    lr_schedules.png   the learning-rate schedules, computed by training/schedule.py
    sweep*.png         the plots `fundamentallm sweep` drew of the real sweep of benchmarks/README.md,
                       section 4 (its slice plot, optimisation history and parameter importances)
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "benchmarks" / "results" / "epyc-zen5-2026-12-01"  # the real sweep of section 4
SWEEP_PLOTS = {"slice.png": "sweep.png", "optimization_history.png": "sweep_history.png",
               "param_importances.png": "sweep_importances.png"}


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lr_schedules(out: Path) -> None:
    import matplotlib.pyplot as plt

    from fundamentallm.config.schema import OptimConfig
    from fundamentallm.training.schedule import LRSchedule

    steps = 1000
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for kind in ("cosine", "wsd", "linear", "constant"):
        schedule = LRSchedule(OptimConfig(lr_schedule=kind, learning_rate=6e-3, warmup_steps=100))
        ax.plot(range(steps), [schedule(s, steps) for s in range(steps)], label=kind)
    ax.set(xlabel="step", ylabel="learning rate", title="Warmup (100 steps), then each --lr-schedule")
    ax.legend()
    save(fig, out / "lr_schedules.png")


def trained_run(work: Path, data: Path, steps: int) -> Path:
    run = work / "run"
    command = [sys.executable, "-m", "fundamentallm", "train", str(data), "-o", str(run), "--quiet",
               "--model-dim", "96", "--num-layers", "3", "--num-heads", "4", "--context-length", "64",
               "--batch-size", "16", "--max-steps", str(steps), "--eval-interval", str(max(10, steps // 20)),
               "--eval-iters", "10", "--log-interval", "5", "--grad-check-interval", str(max(10, steps // 4)),
               "--seed", "1", "--device", "cpu", "--no-compile"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training failed: {done.stderr.strip()[-500:]}")
    return run


def loss_curve(run: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    records = json.loads((run / "metrics.json").read_text())
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot([r["step"] for r in records], [r["train_loss"] for r in records], label="training loss", lw=1)
    val = [r for r in records if r.get("val_loss") is not None]
    ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss", ms=3)
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="A real run: 3 x 96 on the Shakespeare sample")
    ax.legend()
    save(fig, out / "loss_curve.png")


def attention(model, tokenizer, out: Path) -> None:
    import matplotlib.pyplot as plt
    import torch

    text = "ROMEO:\nBut soft, what light through yonder window"
    ids = torch.tensor([tokenizer.encode(text)])
    layer = len(model.blocks) - 1
    block = model.blocks[layer]
    captured = {}

    def keep_input(module, inputs):
        captured["x"] = inputs[0]

    handle = block.register_forward_pre_hook(keep_input)
    with torch.no_grad():
        model(ids)
        handle.remove()
        attn = block.attn
        x = block.attn_norm(captured["x"])  # (1, T, C)
        B, T, C = x.shape
        kv = attn.num_kv_heads * attn.head_dim
        q, k, _ = attn.qkv(x).split([C, kv, kv], dim=2)
        q = q.view(B, T, attn.num_heads, attn.head_dim).transpose(1, 2)  # (1, H, T, D)
        k = k.view(B, T, attn.num_kv_heads, attn.head_dim).transpose(1, 2)  # (1, K, T, D)
        pos = torch.arange(T)  # (T,): the positions of the window
        q, k = model.positions.rotate(attn.q_norm(q), pos), model.positions.rotate(attn.k_norm(k), pos)
        k = k.repeat_interleave(attn.num_heads // attn.num_kv_heads, dim=1)  # (1, H, T, D)
        scores = (q @ k.transpose(-2, -1)) * attn.head_dim ** -0.5  # (1, H, T, T)
        scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        weights = scores.softmax(-1)[0]  # (H, T, T)
    labels = [c if c != "\n" else "\\n" for c in text]
    heads = weights.shape[0]
    fig, axes = plt.subplots(1, heads, figsize=(3.2 * heads, 3.6))
    for h, ax in enumerate(axes):
        ax.imshow(weights[h], cmap="viridis")
        ax.set_title(f"layer {layer + 1}, head {h + 1}")
        ax.set_xticks(range(T))
        ax.set_xticklabels(labels, fontsize=5)
        ax.set_yticks(range(T))
        ax.set_yticklabels(labels, fontsize=5)
    fig.suptitle("Causal attention of the trained model: row = query position, column = key (masked above)")
    save(fig, out / "attention.png")


def temperature(model, tokenizer, out: Path) -> None:
    import matplotlib.pyplot as plt
    import torch

    prompt = "ROMEO:\nWhat is th"
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer.encode(prompt)]))[0, -1]  # (V,)
    order = logits.argsort(descending=True)[:15]
    labels = [repr(tokenizer.decode([int(i)]))[1:-1] for i in order]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.27
    for n, t in enumerate((0.5, 1.0, 1.5)):
        probs = (logits / t).softmax(-1)[order]
        ax.bar([i + (n - 1) * width for i in range(len(order))], probs, width, label=f"temperature {t}")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels(labels)
    ax.set(ylabel="probability", title=f"The next character after {prompt!r}: the 15 most likely")
    ax.legend()
    save(fig, out / "temperature.png")


def rope(model, out: Path) -> None:
    """Left: cos(t * theta_i), the trained model's own table, per position t and channel pair i
    (fast pairs at the top, slow ones below). Right: the score of one query with one key, both
    rotated by the model's `rotate`, against their distance, for the key at two positions:
    the curves coincide because the rotation makes the score a function of t - s only."""
    import matplotlib.pyplot as plt
    import torch

    positions = model.positions
    cos = positions.cos  # (T_max, D/2)
    head_dim = 2 * cos.shape[1]
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, head_dim, generator=generator)
    span = min(cos.shape[0], 96)

    def scores(key_at: int) -> tuple[list[int], list[float]]:
        length = span - key_at
        # (1, 1, T, D): the same query at every position key_at..span-1, rotated there
        queries = positions.rotate(q.expand(1, 1, length, head_dim).contiguous(), torch.arange(key_at, span))
        key = positions.rotate(k.view(1, 1, 1, head_dim), torch.tensor([key_at]))  # the key, at key_at
        return list(range(length)), (queries[0, 0] @ key[0, 0, 0]).tolist()

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    image = left.imshow(cos[:span].T, aspect="auto", cmap="RdBu", vmin=-1, vmax=1)
    left.set(xlabel="position t", ylabel="channel pair i", title=f"cos(t·θ_i), θ_i = β^(-2i/{head_dim})")
    fig.colorbar(image, ax=left)
    for key_at, style in ((0, "-"), (span // 3, "--")):
        distance, score = scores(key_at)
        right.plot(distance, score, style, label=f"key at position {key_at}")
    right.set(xlabel="distance t - s", ylabel="q_t · k_s", title="A rotated query-key score depends on t - s only")
    right.legend()
    save(fig, out / "rope.png")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Make the documentation's pictures from real runs.")
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--steps", type=int, default=600, help="training steps of the run drawn from")
    parser.add_argument("--data", default=str(ROOT / "data" / "shakespeare_sample.txt"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lr_schedules(out)
    with tempfile.TemporaryDirectory() as tmp:
        run = trained_run(Path(tmp), Path(args.data), args.steps)
        loss_curve(run, out)
        shutil.copyfile(run / "gradient_flow.png", out / "gradient_flow.png")
        from fundamentallm.checkpoint import load_model

        model, tokenizer, _ = load_model(run / "final.pt")
        attention(model, tokenizer, out)
        temperature(model, tokenizer, out)
        if model.cfg.position == "rope":
            rope(model, out)
    for source, name in SWEEP_PLOTS.items():  # Optuna's plots of that sweep, as `sweep` drew them
        if (SWEEP / source).exists():
            shutil.copyfile(SWEEP / source, out / name)
    for name in sorted(p.name for p in out.glob("*.png")):
        print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
