"""How problems a user can fix are reported: one line on stderr, exit status 2.

Library code raises `UserError` with a one-line message. The CLI and the scripts parse
their arguments with `ArgumentParser` and run their work through `run_reporting_errors`,
so a bad flag or a bad file is `error: <message>` and status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable

# Set by `train --nproc` (training/launcher.py) for its workers: each also leaves its error
# line in this directory, as error-RANK.txt, so that the launcher knows whether rank 0, whose
# stderr is the console, has shown it already (the agent may stop rank 0 after another rank
# failed, before rank 0's own exit is recorded).
ERROR_DIR_VARIABLE = "FUNDAMENTALLM_ERROR_DIR"


def error_file(directory: str | Path, rank: int | str) -> Path:
    """Where worker `rank` of a `train --nproc` run leaves its error line."""
    return Path(directory) / f"error-{rank}.txt"


def one_line(text: str) -> str:
    """`text` with its line breaks (any that str.splitlines knows: a value a user typed may
    hold a \\r or a \\u2028) turned into spaces: an error is always one line."""
    return " ".join(str(text).splitlines())


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit status 2."""

    exit_code = 2


class StopSignal(KeyboardInterrupt):
    """A stop signal (SIGINT, SIGTERM) that stops a command at once: exit status 128 + its
    number, the shell's convention (130, 143)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.exit_code = 128 + signum


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (no usage block) and status 2."""

    def error(self, message: str):
        self.exit(2, f"error: {one_line(f'{self.prog}: {message}')}\n")


def run_reporting_errors(work: Callable[[], int]) -> int:
    """Run `work()`; turn a UserError into its one-line message and exit status."""
    try:
        return work()
    except UserError as exc:
        line = f"error: {one_line(exc)}"
        print(line, file=sys.stderr, flush=True)
        if os.environ.get(ERROR_DIR_VARIABLE):
            error_file(os.environ[ERROR_DIR_VARIABLE], os.environ.get("RANK", "0")).write_text(line, encoding="utf-8")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return getattr(exc, "exit_code", 130)
