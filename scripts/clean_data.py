#!/usr/bin/env python
"""Clean a corpus into a new file: one spelling per character, \\n line ends, optional filters.

Usage: scripts/clean_data.py IN OUT [--form NFC|NFKC] [--collapse-whitespace]
       [--invalid repair|replace|drop] [--dedupe] [--min-length N] [--max-length N]
       [--min-char-count N] [--rare-char-replacement CHAR]
The input is never overwritten; the output is written atomically and ends with a newline.
"""

from __future__ import annotations

import sys
from dataclasses import fields

from fundamentallm.corpus.cleaning import INVALID_MODES, NORMAL_FORMS, CleaningOptions, clean_file
from fundamentallm.errors import ArgumentParser, run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Write a cleaned copy of a text file.")
    parser.add_argument("input", help="the text file to clean (left untouched)")
    parser.add_argument("output", help="where to write the cleaned text (a different file)")
    parser.add_argument(
        "--form", type=str.upper, choices=NORMAL_FORMS, default="NFC",
        help="Unicode normal form: NFC keeps text as written, NFKC also folds look-alikes (default NFC)",
    )  # fmt: skip
    parser.add_argument(
        "--collapse-whitespace", action="store_true", help="turn every run of spaces/tabs into one space"
    )
    parser.add_argument(
        "--invalid", choices=INVALID_MODES, default="repair",
        help="invalid UTF-8 bytes: repair (read them as Windows-1252), replace (U+FFFD) or drop (default repair)",
    )  # fmt: skip
    parser.add_argument("--dedupe", action="store_true", help="drop non-empty lines seen before; blank lines stay")
    parser.add_argument("--min-length", type=int, metavar="N", help="drop non-empty lines shorter than N chars")
    parser.add_argument("--max-length", type=int, metavar="N", help="drop lines longer than N characters")
    parser.add_argument(
        "--min-char-count", type=int, metavar="N", help="drop characters seen fewer than N times in the output"
    )
    parser.add_argument(
        "--rare-char-replacement", metavar="CHAR", help="replace those rare characters by CHAR instead of dropping"
    )
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: clean(args))


def clean(args) -> int:
    options = CleaningOptions(**{f.name: getattr(args, f.name) for f in fields(CleaningOptions)})
    report = clean_file(args.input, args.output, options)
    print(f"cleaned {args.input} -> {args.output}" + ("" if report.changed else " (no changes needed)"))
    for line in report.summary_lines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
