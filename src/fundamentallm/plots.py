"""Figures that go to files: matplotlib without a display, written atomically."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from fundamentallm.atomic import atomic_write
from fundamentallm.errors import UserError


def new_figure(width: float, height: float, columns: int = 1) -> tuple[Any, Any]:
    """A figure and its axes (an array of them for `columns` > 1)."""
    # not pyplot: no GUI backend, no global figure state. Imported here because matplotlib
    # takes ~0.4 s to load and only the runs that draw (at their end) should pay it.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="tight")
    return figure, figure.subplots(1, columns)


def save_figure(figure: Any, path: str | Path) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glyphs (emoji) missing from the font
            atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=100))
    except OSError as exc:
        raise UserError(f"{path}: cannot write the plot ({exc.strerror})") from None
