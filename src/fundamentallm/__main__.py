"""`python -m fundamentallm` is the same as the `fundamentallm` command."""

from fundamentallm.cli import run

run()
