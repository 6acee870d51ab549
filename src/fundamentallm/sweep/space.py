"""The search space of a sweep: a YAML file keyed by train's options in snake_case.

    parameters:
      learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}   # a range (float or int option)
      model_dim: {choices: [128, 256, 512]}                    # a list of values (any option)

Every value is checked by the option's own validation (its type, choices and check) before
any trial runs, so a bad space is one line at the start, not a failed trial an hour in.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fundamentallm.config import Config, validate
from fundamentallm.config.loading import FieldInfo, coerce, fields, load_yaml
from fundamentallm.errors import UserError

# Settings a trial cannot vary: where runs go and what they read and run on are the sweep's.
UNSWEEPABLE = {"checkpoint.output_dir", "data.train", "data.validation_data", "data.token_cache",
               "training.init_from", "training.device", "tracking.wandb_project"}


@dataclass(frozen=True)
class Parameter:
    info: FieldInfo
    choices: tuple[Any, ...] | None = None  # a list of values, or
    low: float | int | None = None  # a range [low, high]
    high: float | int | None = None
    log: bool = False

    @property
    def name(self) -> str:
        return self.info.name

    def suggest(self, trial) -> Any:
        """This trial's value (an Optuna trial's suggest_* call)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.info.kind is int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


@dataclass(frozen=True)
class SearchSpace:
    parameters: tuple[Parameter, ...]

    def suggest(self, trial) -> dict[str, Any]:
        """{"section.name": value} for one trial."""
        return {p.info.key: p.suggest(trial) for p in self.parameters}

    def check_grid(self, source: str) -> None:
        """--sampler grid: every parameter must be a list of choices."""
        ranges = [p.name for p in self.parameters if p.choices is None]
        if ranges:
            raise UserError(f"{source}: --sampler grid needs a list of choices for every parameter; "
                            f"{', '.join(ranges)} is a range")

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the choices, as {name: value} (the grid of --sampler grid)."""
        names = [p.name for p in self.parameters]
        return [dict(zip(names, values)) for values in itertools.product(*(p.choices for p in self.parameters))]

    def to_dict(self) -> dict[str, Any]:
        def spec(p: Parameter) -> dict[str, Any]:
            if p.choices is not None:
                return {"choices": list(p.choices)}
            return {"low": p.low, "high": p.high, "log": p.log}
        return {p.name: spec(p) for p in self.parameters}


def options_by_name() -> dict[str, FieldInfo]:
    """Train's options by their snake_case name (the names are unique across sections)."""
    return {info.name: info for info in fields() if info.flag is not None}


def load_space(path: str | Path) -> SearchSpace:
    source = str(path)
    data = load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("parameters"), dict) or not data["parameters"]:
        raise UserError(f"{source}: expected a mapping `parameters:` of train options to sweep")
    unknown_top = set(data) - {"parameters"}
    if unknown_top:
        raise UserError(f"{source}: unknown key {sorted(unknown_top)[0]!r} (only `parameters`)")
    known = options_by_name()
    parameters = [parse_parameter(source, name, spec, known) for name, spec in data["parameters"].items()]
    return SearchSpace(tuple(parameters))


def parse_parameter(source: str, name: str, spec: Any, known: dict[str, FieldInfo]) -> Parameter:
    info = known.get(name)
    if info is None:
        raise UserError(f"{source}: unknown option {name!r} (train has no --{name.replace('_', '-')})")
    where = f"{source}: {name}"
    if info.key in UNSWEEPABLE:
        raise UserError(f"{where}: {info.flag} is the sweep's, not a trial's: give it to sweep itself")
    if not isinstance(spec, dict):
        raise UserError(f"{where}: expected {{choices: [...]}} or {{low: ..., high: ...}}")
    extra = set(spec) - {"choices", "low", "high", "log"}
    if extra:
        raise UserError(f"{where}: unknown key {sorted(extra)[0]!r} (choices, low, high, log)")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise UserError(f"{where}: give either choices or low/high, not both")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list")
        checked = tuple(coerce(info, value, where) for value in choices)
        if len(set(map(repr, checked))) < len(checked):
            raise UserError(f"{where}: a choice is listed twice")
        return Parameter(info, choices=checked)
    if "low" not in spec or "high" not in spec:
        raise UserError(f"{where}: a range needs both low and high (or give choices)")
    if info.kind not in (int, float):
        raise UserError(f"{where}: {info.flag} takes {info.kind.__name__} values: give choices, not a range")
    low, high = (coerce(info, spec[k], f"{where} {k}") for k in ("low", "high"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false")
    if not low < high:
        raise UserError(f"{where}: empty or inverted range (low {low} must be below high {high})")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low above 0 (got {low})")
    return Parameter(info, low=low, high=high, log=log)


def check_against(space: SearchSpace, cfg: Config) -> None:
    """Every grid point (for a range: its ends) with the sweep's fixed settings passes the
    cross-field checks (e.g. heads dividing the width), before any trial runs."""
    ends = [p.choices if p.choices is not None else (p.low, p.high) for p in space.parameters]
    for values in itertools.product(*ends):
        trial_cfg = copy.deepcopy(cfg)
        for p, value in zip(space.parameters, values):
            setattr(getattr(trial_cfg, p.info.section), p.name, value)
        try:
            validate(trial_cfg)
        except UserError as exc:
            shown = ", ".join(f"{p.name}={v}" for p, v in zip(space.parameters, values))
            raise UserError(f"the space holds a run that cannot start ({shown}): {exc}") from None
