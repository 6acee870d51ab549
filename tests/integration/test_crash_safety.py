"""Crash safety in CI: the bounded form of benchmarks/crash_safety.py. Real training processes,
one alone and a torchrun pair, are SIGKILLed at random moments (some inside checkpoint
writes) and resumed; every checkpoint must load, no more than the steps since the last
save may be lost, and the final weights must be the uninterrupted run's. The long form:
`python benchmarks/crash_safety.py --kills 200 --torchrun-kills 40`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_script
from integration_helpers import ROOT, fundamentallm_command, process_env, sample_text, tiny_args

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it kills real runs again and again.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGKILL and /proc (Linux)")]


def test_killed_runs_resume_to_the_uninterrupted_weights(tmp_path):
    result = run_script("benchmarks/crash_safety.py", "--kills", "4", "--torchrun-kills", "2", "--seed", "1",
                        "--work", tmp_path, "--json", timeout=900)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["passed"], json.dumps(report, indent=2) + result.stderr[-2000:]
    one, pair = report["runs"]
    assert (one["kills"], pair["kills"]) == (4, 2)
    assert one["inside_checkpoint_write"] >= 1  # two kills timed inside a write: at least one lands there
    assert one["final_identical"] and pair["final_identical"] is not None
    assert one["checkpoints_loaded"] > 0 and one["most_steps_lost"] <= 3


def test_token_cache_builds_killed_at_any_moment_never_leave_an_entry_read_as_valid(tmp_path):
    """SIGKILL `train` while it builds its token cache, at moments spread over the build;
    after each kill, any entry in the cache is whole (the very tokens of a clean build), and
    the build that finally completes removes what the killed ones left."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(sample_text(100_000) * 20, encoding="utf-8")  # 2 MB: a build of a second or two
    argv = ["train", corpus, "-o", tmp_path / "run", *tiny_args(max_steps=1), "--quiet", "--overwrite"]

    def build(cache: Path, kill_after: float | None = None) -> None:
        proc = subprocess.Popen(fundamentallm_command(*argv, "--token-cache", cache), cwd=ROOT, env=process_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if kill_after is None:
            assert proc.wait(timeout=300) == 0, proc.stderr.read()
            return
        time.sleep(kill_after)
        proc.kill()
        proc.wait()

    clean = tmp_path / "clean"
    started = time.monotonic()
    build(clean)
    took = time.monotonic() - started
    (reference,) = [d for d in clean.iterdir() if not d.name.startswith(".")]
    cache = tmp_path / "cache"
    for fraction in (0.3, 0.5, 0.65, 0.8, 0.9):  # start-up, counting, tokenising, writing, publishing
        build(cache, kill_after=took * fraction)
        for entry in (d for d in cache.glob("*") if not d.name.startswith(".")):
            assert (entry / "meta.json").exists(), f"{entry.name}: an entry without meta.json"
            assert_same_entry(entry, reference)
    build(cache)
    assert sorted(p.name for p in cache.iterdir()) == [reference.name]  # abandoned builds removed
    assert_same_entry(cache / reference.name, reference)


def assert_same_entry(entry: Path, reference: Path) -> None:
    """The same tokens, tokenizer and metadata as the clean build; meta.json's "seconds" (how long
    each build phase took) is the one thing two builds may differ in."""
    for name in ("train.bin", "val.bin", "tokenizer.json"):
        assert (entry / name).read_bytes() == (reference / name).read_bytes(), name
    meta, expected = (json.loads((d / "meta.json").read_text(encoding="utf-8")) for d in (entry, reference))
    assert meta.pop("seconds").keys() == expected.pop("seconds").keys()
    assert meta == expected
