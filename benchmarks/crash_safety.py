#!/usr/bin/env python
"""Crash safety, measured: kill real training processes at random moments and resume them.

Starts `fundamentallm train` on a tiny model, SIGKILLs it at a random moment (the first two
kills and about 40% of the rest are timed inside a checkpoint write: the harness watches
the output directory for the temporary file an atomic write makes, and kills as soon as
one appears), resumes
with `--resume auto`, and again, then lets the run finish. After every kill it checks:

- every checkpoint on disk loads (its checksum holds);
- the run lost no more than the steps since its last save (the newest step it printed,
  against the step its resume checkpoint holds);

and at the end, that the final weights are bit for bit those of the same run uninterrupted
(same seed, same data, CPU), and that metrics.json holds every step once. The same is done
for a two-process torchrun run (gloo), killing one of its workers at random.

    python benchmarks/crash_safety.py --json                               # bounded (CI runs this)
    python benchmarks/crash_safety.py --kills 200 --torchrun-kills 40 --json   # the long form

Prints a report (JSON with --json); exit status 1 when any check failed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fundamentallm.checkpoint import load_checkpoint
from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "shakespeare_sample.txt"
CHECKPOINT_INTERVAL = 3
# A tiny model that crosses epoch boundaries (epoch checkpoints too) and uses dropout (the
# random state must resume exactly as well).
FLAGS = ["--model-dim", "32", "--num-layers", "2", "--num-heads", "2", "--context-length", "16",
         "--batch-size", "4", "--dropout", "0.1", "--device", "cpu", "--no-compile", "--precision", "fp32",
         "--eval-interval", "25", "--eval-iters", "2", "--log-interval", "1",
         "--checkpoint-interval", str(CHECKPOINT_INTERVAL), "--epochs", "100000", "--json"]


@dataclass
class Report:
    """What one kind of run (one process, or a torchrun pair) went through."""

    kind: str
    steps: int
    kills: int = 0
    inside_checkpoint_write: int = 0  # killed while a checkpoint's temporary file existed
    during_startup: int = 0  # killed before its first step
    checkpoints_loaded: int = 0  # checkpoint files checked after the kills, every one intact
    most_steps_lost: int = 0
    final_identical: bool | None = None
    failures: list[str] = field(default_factory=list)


def process_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def train_command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "fundamentallm", "train"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "fundamentallm", "train"]


class Training:
    """One training process (or torchrun and its workers), its printed steps read as they come."""

    def __init__(self, argv: list[str], processes: int = 1):
        self.processes = processes
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=process_env(), start_new_session=True)
        self.last_step = 0  # the newest step the run reported finished
        self.stderr: list[str] = []
        threading.Thread(target=self._read_steps, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()

    def _read_steps(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "metrics" and "train_loss" in event:
                self.last_step = max(self.last_step, event["step"])

    def workers(self) -> list[int]:
        """The training processes: this one, or under torchrun, the agent's children (Linux's /proc)."""
        if self.processes == 1:
            return [self.proc.pid]
        children = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            with_suppressed(lambda: children.extend(int(p) for p in (task / "children").read_text().split()))
        return children or [self.proc.pid]

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill_all(self) -> None:
        with_suppressed(lambda: os.killpg(self.proc.pid, signal.SIGKILL))
        self.proc.wait()


def with_suppressed(action) -> None:
    try:
        action()
    except (ProcessLookupError, PermissionError, FileNotFoundError):
        pass


def in_write(out: Path) -> bool:
    """A checkpoint's atomic write under way: its temporary file exists."""
    try:
        return any(entry.name.startswith(".") and ".pt." in entry.name and entry.name.endswith(".tmp")
                   for entry in os.scandir(out))
    except FileNotFoundError:
        return False


def kill_once(argv: list[str], processes: int, out: Path, rng: random.Random, budget_s: float,
              report: Report) -> bool:
    """Start the run, kill one of its processes at a random moment; False if it finished first."""
    resumes_at = saved_step(out) or 0
    run = Training(argv, processes)
    # the first two kills of each kind of run are timed inside a write, so a short run has some
    mode = "in_write" if report.kills < 2 else rng.choices(["in_write", "training", "anytime"], weights=[4, 4, 2])[0]
    deadline = time.monotonic() + budget_s
    if mode == "anytime":  # start-up (imports, data, model) or the first steps
        time.sleep(rng.uniform(0, 3.0))
    else:  # some steps past where it resumed, so the kills spread over the run's writes
        armed = resumes_at + rng.randint(1, 2 * CHECKPOINT_INTERVAL)
        while run.last_step < armed and run.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if mode == "training":
            time.sleep(rng.uniform(0, 0.2))
        else:
            while not in_write(out) and run.proc.poll() is None and time.monotonic() < deadline:
                pass  # poll as fast as we can: a tiny checkpoint takes a few milliseconds to write
    if run.proc.poll() is not None:  # it finished (or failed) before the kill
        run.wait(60)
        if run.proc.returncode != 0:
            report.failures.append(f"exited {run.proc.returncode} before the kill: {''.join(run.stderr)[-300:]}")
        return False
    victim = rng.choice(run.workers())
    with_suppressed(lambda: os.kill(victim, signal.SIGKILL))
    if run.wait(120) is None:  # the other rank must not hang: torchrun stops it
        report.failures.append("the other processes did not stop within 120 s of a rank's kill (a hang)")
    run.kill_all()
    report.kills += 1
    report.inside_checkpoint_write += any(out.glob(".*.pt.*.tmp"))  # the kill cut a checkpoint write short
    report.during_startup += run.last_step == 0
    check_files(out, run.last_step, report)
    return True


def check_files(out: Path, printed_step: int, report: Report) -> None:
    for path in sorted(out.glob("*.pt")):
        try:
            load_checkpoint(path)
            report.checkpoints_loaded += 1
        except UserError as exc:
            report.failures.append(f"after kill {report.kills}: {exc}")
    saved = saved_step(out)
    if saved is None:
        return  # reported above
    lost = printed_step - saved
    report.most_steps_lost = max(report.most_steps_lost, lost)
    if lost > CHECKPOINT_INTERVAL:
        report.failures.append(f"after kill {report.kills}: printed step {printed_step}, but the resume "
                               f"checkpoint holds step {saved}: lost more than the steps since a save")


def saved_step(out: Path) -> int | None:
    """The step a resume would continue from (0 before the first save; None if unreadable)."""
    latest = out / "resume_checkpoint.pt"
    try:
        return load_checkpoint(latest)["train_state"]["counters"]["step"] if latest.exists() else 0
    except UserError:
        return None


def complete(argv: list[str], report: Report) -> None:
    run = Training(argv)
    if run.wait(600) != 0:
        run.kill_all()
        report.failures.append(f"the last resume did not finish: {''.join(run.stderr)[-300:]}")


def max_difference(a: Path, b: Path) -> float:
    wa = torch.load(a, weights_only=True)["model"]
    wb = torch.load(b, weights_only=True)["model"]
    if wa.keys() != wb.keys():
        return float("inf")
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def trial(kind: str, processes: int, kills: int, work: Path, corpus: Path, rng: random.Random) -> Report:
    steps = 30 + 15 * kills  # room for every kill to land in training
    report = Report(kind, steps)
    base = train_command(processes)
    reference, out = work / f"{kind}-uninterrupted", work / f"{kind}-killed"
    start = time.monotonic()
    complete([*base, str(corpus), "-o", str(reference), *FLAGS, "--max-steps", str(steps)], report)
    budget = time.monotonic() - start  # about how long one whole run takes
    argv = [*base, str(corpus), "-o", str(out), *FLAGS, "--max-steps", str(steps), "--resume", "auto"]
    while report.kills < kills and kill_once(argv, processes, out, rng, budget, report):
        pass
    complete(argv, report)
    if (out / "final.pt").exists() and (reference / "final.pt").exists():
        difference = max_difference(out / "final.pt", reference / "final.pt")
        report.final_identical = difference == 0.0
        if difference > (0.0 if processes == 1 else 1e-6):
            report.failures.append(f"final weights differ from the uninterrupted run's by up to {difference:g}")
        records = [r["step"] for r in json.loads((out / "metrics.json").read_text()) if "train_loss" in r]
        if records != list(range(1, steps + 1)):
            extra = sorted({s for s in records if records.count(s) > 1})[:5]
            missing = sorted(set(range(1, steps + 1)) - set(records))[:5]
            report.failures.append(f"metrics.json does not hold every step exactly once (twice: {extra}, "
                                   f"missing: {missing})")
    else:
        report.failures.append("no final.pt to compare")
    return report


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="SIGKILL training runs at random moments, resume them, check nothing is lost.")
    p.add_argument("--kills", type=int, default=6, help="kills of a one-process run")
    p.add_argument("--torchrun-kills", type=int, default=2, help="kills of one worker of a two-process run")
    p.add_argument("--seed", type=int, default=0, help="seeds the kill moments")
    p.add_argument("--work", type=Path, help="keep the runs here (default: a temporary directory)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def work() -> int:
        if args.kills < 0 or args.torchrun_kills < 0:
            raise UserError("--kills and --torchrun-kills must be at least 0")
        root = args.work or Path(tempfile.mkdtemp(prefix="crash-safety-"))
        root.mkdir(parents=True, exist_ok=True)
        corpus = root / "corpus.txt"
        corpus.write_text(SAMPLE.read_text(encoding="utf-8")[:4000], encoding="utf-8")
        rng = random.Random(args.seed)
        started = time.monotonic()
        reports = [trial("one-process", 1, args.kills, root, corpus, rng)]
        if args.torchrun_kills:
            reports.append(trial("torchrun-2", 2, args.torchrun_kills, root, corpus, rng))
        result = {"runs": [asdict(r) for r in reports], "seconds": round(time.monotonic() - started, 1),
                  "passed": not any(r.failures for r in reports)}
        if not args.work:
            shutil.rmtree(root, ignore_errors=True)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            for r in reports:
                print(f"{r.kind}: {r.kills} kills ({r.inside_checkpoint_write} inside a checkpoint write, "
                      f"{r.during_startup} during start-up), {r.checkpoints_loaded} checkpoint loads, at most "
                      f"{r.most_steps_lost} steps lost, final weights identical: {r.final_identical}")
                for failure in r.failures:
                    print(f"  FAILED: {failure}")
        return 0 if result["passed"] else 1

    return run_reporting_errors(work)


if __name__ == "__main__":
    sys.exit(main())
