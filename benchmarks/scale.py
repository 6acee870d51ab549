#!/usr/bin/env python
"""Large corpora: what preparing them costs, for each tokenizer, as the corpus grows.

Builds corpora of the sizes asked for (default 10 and 100 MB; `--sizes 10 100 1000` adds a
gigabyte) from two sources:

    repeated   the training text (`--data`, Shakespeare) repeated to the size
    real       text files found on this machine (documentation under /usr/share, then the
               Python sources of the standard library), concatenated to the size: varied
               text, with more distinct words and characters than a repeated play

and for each corpus and tokenizer (char, byte, BPE of `--vocab-size`) runs `train` twice into
a fresh token cache (`--token-cache DIR`): the first run prepares the cache (counting,
training the tokenizer, tokenising), the second starts from it. Each run is one training
step of a tiny model, so what is measured is the data's cost:

    prepare_mb_s       corpus MB / (first run's time to its first step - the cached run's)
    stage_s            the first run's stages as the cache entry records them: counting
                       characters, training the tokenizer, tokenizing (seconds)
    tokenize_mb_s      corpus MB / the tokenizing stage's seconds (BPE's encoding rate)
    first_step_s       first run: process start to its first training step (stdout's record)
    cached_start_s     second run: the same, from the cache
    baseline_start_s   the same command on a 20 KB text (importing torch, building the model,
                       a step): cached_start_s - baseline_start_s is what the corpus adds
    peak_rss_mb        the first run's peak resident memory (the whole process)
    cache_mb           the cache entry's size on disk

Writes one JSON object (and with `--plot FILE` a plot of the growth); the raw results of a
machine go in results/<machine>/scale.json. The goals (issue: performance at scale): char
preparation >= 50 MB/s, BPE encoding >= 10 MB/s and its training on 1 GB <= 3 minutes, peak
RSS <= 2 GB for a 1 GB corpus, a cached start <= 1 s beyond the baseline.

    python benchmarks/scale.py --json                              # 10 and 100 MB
    python benchmarks/scale.py --sizes 10 100 1000 --json --plot scale.png
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000
TINY = ["--model-dim", "32", "--num-layers", "1", "--num-heads", "2", "--context-length", "32", "--batch-size", "4",
        "--max-steps", "1", "--eval-iters", "1", "--device", "cpu", "--no-compile", "--precision", "fp32", "--json"]
REAL_SOURCES = [Path("/usr/share/doc"), Path("/usr/share/man"), Path(sysconfig.get_paths()["stdlib"])]
REAL_SUFFIXES = {".txt", ".md", ".rst", ".py", ".html", ""}


def repeated(text: str, size: int, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as out:
        written = 0
        while written < size:
            piece = text[: size - written]
            out.write(piece)
            written += len(piece.encode("utf-8"))
    return path


def real_text(size: int, path: Path) -> tuple[Path, int]:
    """Readable UTF-8 text files of this machine, concatenated up to `size` bytes (fewer if the
    machine has less); each file once, in a fixed order."""
    written = 0
    with path.open("w", encoding="utf-8") as out:
        for source in REAL_SOURCES:
            for file in sorted(source.rglob("*")) if source.is_dir() else []:
                if written >= size:
                    return path, written
                if file.suffix not in REAL_SUFFIXES or not file.is_file() or file.is_symlink():
                    continue
                try:
                    text = file.read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                text = text[: size - written] + "\n\n"
                out.write(text)
                written += len(text.encode("utf-8"))
    return path, written


def timed_train(corpus: Path, out: Path, cache: Path, tokenizer: list[str]) -> dict:
    """One `train` process: seconds to its first step record, in all, and its peak RSS."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fundamentallm", "train", str(corpus), "-o", str(out),
                             "--token-cache", str(cache), *tokenizer, *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    first_step = None
    for line in proc.stdout:
        if first_step is None and line.startswith('{"event": "metrics"'):
            first_step = time.perf_counter() - began
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise UserError(f"train {corpus.name} {' '.join(tokenizer)} failed: {stderr.strip().splitlines()[-1:]}")
    return {"first_step_s": round(first_step or float("nan"), 2), "total_s": round(time.perf_counter() - began, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def directory_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / MB, 1)


def measure(corpus: Path, size_mb: float, work: Path, name: str, tokenizer: list[str], baseline: float) -> dict:
    cache = work / f"cache-{name}"
    first = timed_train(corpus, work / f"run-{name}-1", cache, tokenizer)
    cached = timed_train(corpus, work / f"run-{name}-2", cache, tokenizer)
    prep = first["first_step_s"] - cached["first_step_s"]
    meta = json.loads(next(cache.glob("*/meta.json")).read_text())  # the stages the build timed
    stages, corpus_mb = meta["seconds"], (meta["train_bytes"] + meta.get("val_bytes", 0)) / MB
    row = {"prepare_mb_s": round(size_mb / prep, 2) if prep > 0 else None, "prepare_s": round(prep, 2),
           "first_step_s": first["first_step_s"], "cached_start_s": cached["first_step_s"],
           "cached_beyond_baseline_s": round(cached["first_step_s"] - baseline, 2),
           "peak_rss_mb": first["peak_rss_mb"], "cached_peak_rss_mb": cached["peak_rss_mb"],
           "cache_mb": directory_mb(cache), "stage_s": stages,
           "tokenize_mb_s": round(corpus_mb / stages["tokenizing"], 1) if stages["tokenizing"] > 0 else None}
    shutil.rmtree(cache, ignore_errors=True)
    for run in work.glob(f"run-{name}-*"):
        shutil.rmtree(run, ignore_errors=True)
    return row


def plot(results: dict, path: Path) -> None:
    import matplotlib  # (the plots extra; only for --plot)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for (source, kind), rows in group_rows(results).items():
        sizes = [r["size_mb"] for r in rows]
        label = f"{kind}, {source}"
        axes[0].plot(sizes, [r["prepare_s"] for r in rows], marker="o", label=label)
        axes[1].plot(sizes, [r["peak_rss_mb"] for r in rows], marker="o", label=label)
        axes[2].plot(sizes, [r["cached_start_s"] for r in rows], marker="o", label=label)
    for ax, title in zip(axes, ("preparation (s)", "peak RSS, first run (MB)", "cached start to first step (s)")):
        ax.set_xscale("log")
        ax.set_xlabel("corpus (MB)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def group_rows(results: dict) -> dict:
    grouped: dict = {}
    for row in results["rows"]:
        grouped.setdefault((row["source"], row["tokenizer"]), []).append(row)
    return grouped


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(ROOT / "data" / "shakespeare_sample.txt"), help="the text to repeat")
    p.add_argument("--sizes", type=float, nargs="+", default=[10, 100], help="corpus sizes in MB")
    p.add_argument("--sources", nargs="+", default=["repeated", "real"], choices=["repeated", "real"])
    p.add_argument("--tokenizers", nargs="+", default=["char", "byte", "bpe"], choices=["char", "byte", "bpe"])
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE's vocabulary")
    p.add_argument("--work", type=Path, help="where the corpora and caches go (default: a temporary directory)")
    p.add_argument("--plot", type=Path, help="write a plot of the growth to this PNG")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def work() -> int:
        if any(s <= 0 for s in args.sizes):
            raise UserError("--sizes must be above 0")
        root = Path(tempfile.mkdtemp(prefix="scale-", dir=args.work))
        try:
            text = Path(args.data).read_text(encoding="utf-8")
            small = repeated(text, 20_000, root / "baseline.txt")
            baseline = timed_train(small, root / "run-baseline", root / "cache-baseline", ["--tokenizer", "char"])
            results: dict = {"cpu": cpu_name(), "cores": os.cpu_count(), "baseline_start_s": baseline["first_step_s"],
                             "vocab_size": args.vocab_size, "rows": []}
            for size in args.sizes:
                for source in args.sources:
                    corpus = root / f"{source}-{size:g}MB.txt"
                    if source == "repeated":
                        repeated(text, int(size * MB), corpus)
                        actual = size
                    else:
                        _, written = real_text(int(size * MB), corpus)
                        actual = round(written / MB, 1)
                    for kind in args.tokenizers:
                        flags = ["--tokenizer", kind] + (["--vocab-size", str(args.vocab_size)] if kind == "bpe" else [])
                        row = measure(corpus, actual, root, f"{source}-{kind}", flags, baseline["first_step_s"])
                        results["rows"].append({"source": source, "size_mb": actual, "tokenizer": kind, **row})
                        if not args.json:
                            print(json.dumps(results["rows"][-1]), flush=True)
                    corpus.unlink()
            if args.plot:
                plot(results, args.plot)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        if args.json:
            print(json.dumps(results, indent=2))
        return 0

    return run_reporting_errors(work)


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
