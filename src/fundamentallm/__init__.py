"""FundamentaLLM: train a transformer language model from scratch on your own text.

    import fundamentallm as fl
    fl.train("notes.txt", output_dir="runs/notes", max_time=60)
    print(fl.load("runs/notes/final.pt").generate("The ", max_tokens=80))

The names below are the Python API (api.py; docs/getting-started/python.md). Each loads its
module when it is first used, not when the package is imported: Python imports this file
before any module of the package, and `import fundamentallm.model` must not load the
training loop, inference and the export code with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {  # name -> the module that defines it
    "train": "fundamentallm.api",
    "load": "fundamentallm.api",
    "Model": "fundamentallm.api",
    "Config": "fundamentallm.config",
    "Score": "fundamentallm.evaluation",
    "Completion": "fundamentallm.generation",
    "UserError": "fundamentallm.errors",
}
__all__ = [*_API, "__version__"]

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports
    from fundamentallm.api import Model, load, train
    from fundamentallm.config import Config
    from fundamentallm.errors import UserError
    from fundamentallm.evaluation import Score
    from fundamentallm.generation import Completion


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # found once, then an ordinary attribute
        return value
    raise AttributeError(f"module 'fundamentallm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
