#!/usr/bin/env python
"""Clean a corpus into a new file: Unicode normalisation, no control characters, \\n line ends.

Usage: scripts/clean_data.py IN OUT [--form NFC|NFKC] [--collapse-whitespace]
The input is never overwritten.
"""

from __future__ import annotations

import sys

from fundamentallm.data.cleaning import NORMAL_FORMS, clean_file
from fundamentallm.errors import ArgumentParser, run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Write a cleaned copy of a UTF-8 text file.")
    parser.add_argument("input", help="the text file to clean (left untouched)")
    parser.add_argument("output", help="where to write the cleaned text (a different file)")
    parser.add_argument(
        "--form", type=str.upper, choices=NORMAL_FORMS, default="NFC",
        help="Unicode normal form: NFC keeps text as written, NFKC also folds look-alikes (default NFC)",
    )  # fmt: skip
    parser.add_argument(
        "--collapse-whitespace", action="store_true", help="turn every run of spaces/tabs into one space"
    )
    args = parser.parse_args(argv)
    return run_reporting_errors(lambda: clean(args))


def clean(args) -> int:
    report = clean_file(args.input, args.output, form=args.form, collapse_whitespace=args.collapse_whitespace)
    print(f"cleaned {args.input} -> {args.output}" + ("" if report.changed else " (no changes needed)"))
    for line in report.summary_lines():
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
