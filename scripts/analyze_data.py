#!/usr/bin/env python
"""Look at a corpus before training on it: size, character inventory and stray characters.

Usage: scripts/analyze_data.py FILE|DIR [--json] [--top N]
"""

from __future__ import annotations

import json
import sys

from rich.console import Console

from fundamentallm.data.analysis import analyze_path, render_report
from fundamentallm.errors import ArgumentParser, run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Report on a text file, or on every .txt file below a directory.")
    parser.add_argument("path", help="a UTF-8 text file or a directory of .txt files")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="how many most/least common characters to list (10)"
    )
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: analyze(args))


def analyze(args) -> int:
    report = analyze_path(args.path, top=args.top)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        # Piped output gets a generous width so tables are not squeezed to 80 columns.
        Console(highlight=False, width=None if sys.stdout.isatty() else 120).print(render_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
