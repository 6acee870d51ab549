#!/usr/bin/env python
"""Look at a corpus before training on it: size, characters, lines, encoding problems, advice.

Usage: scripts/analyze_data.py FILE|DIR [--json] [--plot PNG] [--top N] [--bpe-vocab-size N]
Any file is accepted, UTF-8 or not: invalid bytes and odd encodings are what it reports.
"""

from __future__ import annotations

import json
import sys

from rich.console import Console

from fundamentallm.corpus.analysis import analyze_path
from fundamentallm.corpus.report import render_report, write_plot
from fundamentallm.errors import ArgumentParser, run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Report on a text file, or on every .txt and .md file below a directory.")
    parser.add_argument("path", help="a text file or a directory of .txt/.md files")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--plot", metavar="PNG", help="also write line-length and character-frequency charts")
    parser.add_argument(
        "--top", type=int, default=10, metavar="N", help="how many most/least common characters to list (10)"
    )
    parser.add_argument(
        "--bpe-vocab-size", type=int, default=4096, metavar="N",
        help="vocabulary of the byte-level BPE used to estimate the token count (4096)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: analyze(args))


def analyze(args) -> int:
    report = analyze_path(args.path, top=args.top, bpe_vocab_size=args.bpe_vocab_size)
    if args.plot:
        write_plot(report, args.plot)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        # Piped output gets a generous width so tables are not squeezed to 80 columns.
        Console(highlight=False, width=None if sys.stdout.isatty() else 120).print(render_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
