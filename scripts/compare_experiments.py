#!/usr/bin/env python
"""Compare training runs: one row per run directory, best validation loss first.

Usage: scripts/compare_experiments.py DIR [--json] [--sort KEY]
"""

from __future__ import annotations

import json
import sys

from rich.console import Console

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors
from fundamentallm.experiments import DEFAULT_SORT, SORT_KEYS, compare_runs, runs_as_json, runs_table


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Compare every training run found below a directory.")
    parser.add_argument("directory", help="a run directory, or a directory with run directories below it")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument(
        "--sort", default=DEFAULT_SORT, metavar="KEY",
        help=f"ascending, missing values last (default {DEFAULT_SORT}); one of: {', '.join(SORT_KEYS)}",
    )  # fmt: skip
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: compare(args))


def compare(args) -> int:
    comparison = compare_runs(args.directory, sort=args.sort)
    for warning in comparison.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not comparison.runs:
        raise UserError(f"no readable runs found below {args.directory}")
    if args.json:
        print(json.dumps(runs_as_json(comparison.runs), indent=2))
    else:
        # Piped output gets a generous width so the ten columns are not squeezed to 80.
        Console(highlight=False, width=None if sys.stdout.isatty() else 160).print(runs_table(comparison.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
