#!/usr/bin/env python
"""From a base model to a chat model, measured: exact-match accuracy on held-out questions.

1. The chat task of scripts/make_chat_data.py from `--data` (questions about the first 90%
   of the text to train on; about the last 10%, which the base model never saw, to test).
2. A base model: `fundamentallm train` on the first 90% of `--data` for `--base-seconds`
   (the defaults: sized to the budget), or `--base CKPT`.
3. Two fine-tunes of it on the conversations, `--finetune-seconds` each:

       fundamentallm train chats/train.jsonl --format chat --init-from BASE --max-time S
       ... --train-on all        (the loss on every token: the system's and user's too)

4. Each model answers every test question greedily through the chat template (the base
   model through the same template: it has the turn tokens, untrained), and an answer is
   right when it equals the expected one exactly (after stripping spaces).

Goal: the masked fine-tune beats the base model by a wide margin and does not lose to the
unmasked one.

    python benchmarks/chat.py --data ../shared/data/shakespeare.txt --json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from fundamentallm.checkpoint import load_model
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors
from fundamentallm.generation import TextGenerator
from fundamentallm.sampling import SamplingOptions
from fundamentallm.tokenizers.chat import ChatTemplate

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"{' '.join(args[:3])} failed: {done.stderr.strip().splitlines()[-1:]}")


def accuracy(checkpoint: Path, test: Path, max_tokens: int) -> dict:
    """Exact-match accuracy over the test conversations: overall and per task."""
    model, tokenizer, _ = load_model(checkpoint, "cpu")
    generator, template = TextGenerator(model, tokenizer), ChatTemplate(tokenizer)
    options = SamplingOptions(max_tokens=max_tokens, temperature=0)
    right, asked = Counter(), Counter()
    for line in test.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        *history, answer = record["messages"]
        reply = generator.complete(template.prompt(history), options, stop_ids=template.stop_ids)[0].text
        asked[record["task"]] += 1
        right[record["task"]] += reply.strip() == answer["content"].strip()
    return {"accuracy": round(sum(right.values()) / sum(asked.values()), 4),
            "by_task": {task: round(right[task] / asked[task], 3) for task in sorted(asked)}}


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/shakespeare_sample.txt")
    p.add_argument("--base", help="a base checkpoint (default: train one for --base-seconds)")
    p.add_argument("--base-seconds", type=float, default=120)
    p.add_argument("--finetune-seconds", type=float, default=60)
    p.add_argument("--questions", type=int, default=4000)
    p.add_argument("--test-questions", type=int, default=300)
    p.add_argument("--max-tokens", type=int, default=24, help="the longest answer generated")
    p.add_argument("--json", action="store_true")
    p.add_argument("extra", nargs="*", help="more train flags for every run, after --")
    args = p.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        text = Path(args.data).read_text(encoding="utf-8")
        (tmp / "train.txt").write_text(text[:int(len(text) * 0.9)], encoding="utf-8")
        run(str(ROOT / "scripts/make_chat_data.py"), args.data, str(tmp / "chats"), "--questions",
            str(args.questions), "--test-questions", str(args.test_questions))
        base = Path(args.base) if args.base else tmp / "base/final.pt"
        if not args.base:
            run("-m", "fundamentallm", "train", str(tmp / "train.txt"), "-o", str(tmp / "base"), "--max-time",
                str(args.base_seconds), "--quiet", *args.extra)
        runs, seconds = {"base": base}, {}
        for name, flags in (("masked", []), ("unmasked", ["--train-on", "all"])):
            began = time.perf_counter()
            run("-m", "fundamentallm", "train", str(tmp / "chats/train.jsonl"), "--format", "chat", "--init-from",
                str(base), "-o", str(tmp / name), "--max-time", str(args.finetune_seconds), "--quiet", *flags,
                *args.extra)
            runs[name], seconds[name] = tmp / name / "final.pt", round(time.perf_counter() - began, 1)
        results = {}
        for name, checkpoint in runs.items():
            results[name] = accuracy(checkpoint, tmp / "chats/test.jsonl", args.max_tokens)
            if name != "base":
                summary = json.loads((checkpoint.parent / "summary.json").read_text())
                results[name].update(steps=summary["steps"], seconds=seconds[name],
                                     best_val_loss=round(summary["best_val_loss"], 4))
            print(name, results[name], file=sys.stderr)
    report = {"data": args.data, "base": args.base or f"trained {args.base_seconds:g} s",
              "finetune_seconds": args.finetune_seconds, "test_questions": args.test_questions,
              "results": results,
              "masked_beats_base": results["masked"]["accuracy"] >= results["base"]["accuracy"] + 0.2,
              "masked_not_below_unmasked": results["masked"]["accuracy"] >= results["unmasked"]["accuracy"]}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for name, result in results.items():
            print(f"{name:>9}: {result['accuracy']:.1%} exact  {result['by_task']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
