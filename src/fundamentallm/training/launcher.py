"""`fundamentallm train --nproc N ...`: several processes on this machine, without torchrun's
boilerplate.

The command starts PyTorch's own elastic agent (what `torchrun --standalone
--nproc-per-node N` runs, `torch.distributed.launcher.elastic_launch`) with the same train
command minus `--nproc`, one worker per process, and waits for it. What a user sees:

- rank 0's console as usual (progress, warnings, the summary); the other ranks' stderr goes
  to log files, since it would only repeat rank 0's;
- when a worker fails, one line: its own `error:` line (a bad flag or file is found by every
  rank alike), or which process ended and how (a crash, or a kill), and never the
  launcher's traceback. Exit status 2 for an input error, 1 otherwise;
- Ctrl-C or SIGTERM (a scheduler's preemption notice) to the launcher reaches every worker
  once: each finishes its step and saves a resumable state (the agent allows them
  `SHUTDOWN_TIMEOUT_S`), and the run continues with `--resume`.

Each worker gets OMP_NUM_THREADS = the machine's cores / N unless it is set (the agent
would set 1). Several machines: run torchrun on each, as the README's "Several machines"
shows; this launcher is for one.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from fundamentallm.errors import ERROR_DIR_VARIABLE, error_file

SHUTDOWN_TIMEOUT_S = 120  # how long the agent waits for workers to save after a stop signal


def strip_nproc(argv: list[str]) -> list[str]:
    """The train command line without `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run `fundamentallm ARGV` (a train command) in `nproc` local processes; the exit status."""
    # torch's elastic agent, imported when --nproc asks for it: the CLI imports this module
    # for every command, and torch itself must not load until a command needs it.
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logs = Path(tempfile.mkdtemp(prefix="fundamentallm-workers-"))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
        logs_specs=DefaultLogsSpecs(log_dir=str(logs), redirects={r: Std.ERR for r in range(1, nproc)}),
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[ERROR_DIR_VARIABLE] = str(logs)  # where each worker leaves its error line
    quiet = [logging.getLogger(name) for name in ("torch.distributed.elastic", "torch.distributed.launcher")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)  # the agent's own reports; ours is one line
    try:
        elastic_launch(config, sys.executable)("-m", "fundamentallm", *argv)
        return 0
    except ChildFailedError as exc:
        return report_failure(exc, logs, nproc)
    except SignalException as exc:
        name = signal.Signals(exc.sigval).name
        print(f"stopped by {name}: the workers saved their state; continue with --resume", file=sys.stderr)
        return 128 + int(exc.sigval)
    finally:
        os.environ.pop(ERROR_DIR_VARIABLE, None)
        for log, level in zip(quiet, levels):
            log.setLevel(level)
        shutil.rmtree(logs, ignore_errors=True)


def report_failure(exc, logs: Path, nproc: int) -> int:
    """One line for a failed run: the first failure's own error line, or how it ended."""
    # An input error on any process explains the rest (which may have been stopped, or have
    # crashed on the way out), so it is reported before the first failure in time.
    input_errors = sorted(rank for rank, f in exc.failures.items() if f.exitcode == 2)
    rank, failure = (input_errors[0], exc.failures[input_errors[0]]) if input_errors else exc.get_first_failure()
    if failure.exitcode == 2:  # an input error, reported by the worker as `error: ...`
        if not error_file(logs, 0).exists():  # rank 0's went to the console; another's did not
            line = error_file(logs, rank)
            print(line.read_text(encoding="utf-8") if line.exists()
                  else f"error: process {rank} of {nproc} stopped with an input error", file=sys.stderr)
        return 2
    how = (f"was killed by {signal.Signals(-failure.exitcode).name}" if failure.exitcode < 0
           else f"failed (exit status {failure.exitcode})")
    tail = worker_stderr(logs, rank).strip().splitlines()[-1:] if rank != 0 else []
    print(f"error: process {rank} of {nproc} {how}" + (f" ({tail[0].strip()[:200]})" if tail else "")
          + "; the other processes were stopped; continue from the last save with --resume", file=sys.stderr)
    return 1


def worker_stderr(logs: Path, rank: int) -> str:
    """What worker `rank` wrote to stderr (the agent's log layout: LOGS/<run>/attempt_0/<rank>/stderr.log)."""
    found = sorted(logs.glob(f"**/attempt_*/{rank}/stderr.log"))
    return found[-1].read_text(errors="replace") if found else ""
