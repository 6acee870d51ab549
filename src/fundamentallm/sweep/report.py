"""What a sweep found: the trials sorted by objective, `best.yaml`, and Optuna's plots.

`best.yaml` is the best trial's own resolved config (its `config.yaml`) without its output
directory, so `fundamentallm train --config DIR/best.yaml -o NEW_DIR` trains that run again
(same seed, same data: the same losses on a CPU).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table
from rich.text import Text

from fundamentallm.atomic import write_text
from fundamentallm.errors import UserError
from fundamentallm.plots import save_figure

PLOTS = ("optimization_history", "param_importances", "slice")


def trial_rows(study) -> list[dict[str, Any]]:
    """The finished trials, best first; then the pruned ones (by their last reported value),
    the failed and the unfinished."""
    rows = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
             "run_dir": t.user_attrs.get("run_dir"), **({"error": t.user_attrs["error"]}
                                                        if "error" in t.user_attrs else {})}
            for t in study.get_trials(deepcopy=False)]
    rank = {"COMPLETE": 0, "PRUNED": 1}
    return sorted(rows, key=lambda r: (rank.get(r["state"], 2), r["value"] is None,
                                       r["value"] if r["value"] is not None else 0, r["number"]))


def best_trial(study):
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return min(complete, key=lambda t: t.value) if complete else None


def report_dict(study) -> dict[str, Any]:
    best = best_trial(study)
    return {"best": {"trial": best.number, "value": best.value, "params": best.params} if best else None,
            "objective": study.user_attrs.get("objective"), "trials": trial_rows(study)}


def write_best_yaml(study, directory: Path) -> Path | None:
    best = best_trial(study)
    if best is None:
        return None
    source = Path(best.user_attrs["run_dir"]) / "config.yaml"
    try:
        config = yaml.safe_load(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{source}: the best trial's config cannot be read ({exc})") from None
    config.get("checkpoint", {}).pop("output_dir", None)  # a retrained run chooses its own
    path = directory / "best.yaml"
    header = (f"# The best trial of this sweep: trial {best.number}, {study.user_attrs.get('objective')} "
              f"{best.value:.4f}.\n# Train it again: fundamentallm train --config {path} -o NEW_DIR\n")
    write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_plots(study, directory: Path) -> tuple[list[Path], list[str]]:
    """Optuna's matplotlib plots as PNGs; a plot that needs more trials is skipped, and said."""
    import matplotlib.pyplot as pyplot  # the [sweep] extra (optuna) draws with pyplot: loaded only to draw
    from optuna.exceptions import ExperimentalWarning  # the [sweep] extra
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    written, skipped = [], []
    if len(complete) < 2:
        return written, [f"plots need 2 finished trials ({len(complete)} so far)"]
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)  # the matplotlib plots are "experimental"
                kwargs = {"params": top_params(study)} if name == "slice" else {}
                ax = getattr(plots, f"plot_{name}")(study, **kwargs)
        except (ValueError, RuntimeError, ImportError) as exc:
            skipped.append(f"{name}: {str(exc).splitlines()[0][:120]}")
            continue
        figure = ax.flat[0].figure if hasattr(ax, "flat") else ax.figure
        path = directory / f"{name}.png"
        save_figure(figure, path)
        pyplot.close(figure)  # Optuna draws through pyplot, which keeps every figure otherwise
        written.append(path)
    return written, skipped


def top_params(study, count: int = 2) -> list[str]:
    """The most important parameters (all of them when importance cannot be computed)."""
    import optuna  # the [sweep] extra (its absence is reported by study.import_optuna)

    try:
        ranked = list(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ImportError):
        ranked = sorted({name for t in study.get_trials(deepcopy=False) for name in t.params})
    return ranked[:count]


def trials_table(rows: list[dict[str, Any]], objective: str) -> Table:
    table = Table(title=f"trials, best {objective} first")
    for name in ("trial", "state", objective, "parameters", "run"):
        table.add_column(name, justify="right" if name in ("trial", objective) else "left")
    for row in rows:
        value = "" if row["value"] is None or not math.isfinite(row["value"]) else f"{row['value']:.4f}"
        table.add_row(str(row["number"]), row["state"], value, Text(params_text(row["params"])),
                      Text(Path(row["run_dir"]).name if row["run_dir"] else ""))
    return table


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trial_line(trial, objective: str) -> str:
    """One line per finished trial: its state, value and parameters."""
    value = f" {objective} {trial.value:.4f}" if trial.value is not None else ""
    error = f" ({trial.user_attrs['error']})" if "error" in trial.user_attrs else ""
    return f"trial {trial.number} {trial.state.name.lower()}{value}: {params_text(trial.params)}{error}"
