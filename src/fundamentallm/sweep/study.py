"""A sweep is an Optuna study whose trials are ordinary training runs.

Each trial asks the sampler for its parameters, trains into `DIR/trial_NNNN/` exactly as
`fundamentallm train` would (the sweep's own flags held fixed, the trial's on top), and
tells the study its objective: the run's best validation loss, or bits per character.
Every evaluation is reported to the trial, and the pruner may stop a hopeless run there:
the run still ends properly (its summary says `pruned`) and the trial is marked pruned.

The study lives in a storage (SQLite `DIR/study.db` by default, or any Optuna storage URL),
so rerunning the same command continues it, several processes can work on one study, and a
killed sweep loses only the trials that were running. Those are found at the next start (a
RUNNING trial of this machine whose process is gone) and marked failed; they do not count
towards `--trials`.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundamentallm.config import ConfigSources
from fundamentallm.console import TrainingConsole
from fundamentallm.errors import UserError, run_reporting_errors
from fundamentallm.sweep.space import SearchSpace, check_against, load_space
from fundamentallm.training.loop import train

# --objective: the record key a trial reports at each evaluation, and the summary key it ends with.
OBJECTIVES = {"val_loss": "best_val_loss", "val_bits_per_char": "best_val_bits_per_char"}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
STUDY_ATTRS = ("objective", "space")  # what defines a study: a rerun must agree


def import_optuna():
    try:
        import optuna  # the [sweep] extra
    except ImportError:
        raise UserError("fundamentallm sweep needs Optuna: pip install 'fundamentallm[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own lines
    return optuna


@dataclass(kw_only=True)
class SweepSettings:
    """Everything a worker needs (picklable: --workers starts processes with it)."""

    directory: str
    space_file: str
    sources: ConfigSources  # the train settings held fixed for every trial
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = "val_loss"
    trials: int | None = None
    deadline: float | None = None  # time.time() after which no new trial starts
    storage: str | None = None
    study_name: str = "sweep"
    sampler_seed: int = 0
    space: SearchSpace | None = field(default=None, repr=False)

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{Path(self.directory).resolve() / 'study.db'}"


def make_storage(url: str):
    optuna = import_optuna()
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(3):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine)
        except ImportError as exc:  # the database's driver, e.g. psycopg for postgresql://
            missing = getattr(exc.__cause__, "name", None) or "driver"
            raise UserError(f"--storage {url}: needs the {missing} package (pip install "
                            "'fundamentallm[sweep]')") from None
        except Exception as exc:  # sqlalchemy and driver errors: unreachable server, bad URL, ...
            # Two processes creating a new database's tables at once: one of them loses the
            # race (a duplicate key), and finds the tables there when it tries again.
            error = exc
            time.sleep(0.5 * (attempt + 1))
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise UserError(f"--storage {url}: cannot open the study storage ({first})")


def make_sampler(settings: SweepSettings):
    optuna = import_optuna()
    if settings.sampler in ("random", "grid"):  # a grid's trials are queued with their values (queue_grid)
        return optuna.samplers.RandomSampler(seed=settings.sampler_seed)
    return optuna.samplers.TPESampler(seed=settings.sampler_seed)


def make_pruner(name: str):
    optuna = import_optuna()
    if name == "median":
        # Two finished trials are enough to call a run hopeless: in a small sweep five (Optuna's
        # default) would leave most of it unpruned.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def open_study(settings: SweepSettings, space: SearchSpace):
    optuna = import_optuna()
    study = optuna.create_study(
        storage=make_storage(settings.storage_url), study_name=settings.study_name, direction="minimize",
        sampler=make_sampler(settings), pruner=make_pruner(settings.pruner), load_if_exists=True)
    defining = {"objective": settings.objective, "space": space.to_dict()}
    for key, value in defining.items():
        stored = study.user_attrs.get(key)
        if stored is None:
            study.set_user_attr(key, value)
        elif stored != value:
            raise UserError(f"study {settings.study_name!r} in {settings.storage_url} was started with another "
                            f"{key} ({stored}); use another --output-dir or --study-name")
    return study


def load_study(storage_url: str, study_name: str):
    optuna = import_optuna()
    try:
        return optuna.load_study(study_name=study_name, storage=make_storage(storage_url))
    except KeyError:
        raise UserError(f"no study {study_name!r} in {storage_url}") from None


def prepare(settings: SweepSettings) -> SweepSettings:
    """Check the space and the fixed settings before any trial runs."""
    space = load_space(settings.space_file)
    base = settings.sources.resolve()
    if not base.data.train:
        raise UserError("sweep: give the training text (fundamentallm sweep FILE --space SPACE.yaml ...)")
    if base.data.val_split == 0 and not base.data.validation_data:
        raise UserError("sweep: the objective is a validation loss; give --validation-data or a --val-split above 0")
    fixed = {info_key.split(".")[1] for info_key in settings.sources.flags}
    clash = [p.name for p in space.parameters if p.name in fixed]
    if clash:
        raise UserError(f"--{clash[0].replace('_', '-')} is both held fixed and swept; drop one")
    if settings.sampler == "grid":
        space.check_grid(settings.space_file)
    check_against(space, base)
    settings.space = space
    return settings


def counted(trial) -> bool:
    """Trials that count towards --trials: finished ones (a run that failed on its settings
    too), and running ones; not those a killed sweep left behind."""
    state = trial.state.name
    return state in ("COMPLETE", "PRUNED", "RUNNING") or (state == "FAIL" and "error" in trial.user_attrs)


def fail_orphans(study) -> list[int]:
    """RUNNING trials of this machine whose process has gone (a killed sweep): marked failed,
    and their parameters queued to run again."""
    host, found = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False):
        if trial.state.name != "RUNNING" or trial.user_attrs.get("host") != host:
            continue
        pid = trial.user_attrs.get("pid")
        if isinstance(pid, int) and not process_alive(pid):
            study.tell(trial.number, state=import_optuna().trial.TrialState.FAIL)
            if trial.params:
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            found.append(trial.number)
    return found


def queue_grid(study, space: SearchSpace) -> int:
    """--sampler grid: queue every point of the grid that no trial has taken yet (done,
    running or queued; a failed trial's point only when its settings failed, not its process).
    Optuna's GridSampler counts a failed trial's point as done, which would lose a point of
    a killed sweep; queued trials with fixed values run each point exactly once."""
    def point(trial) -> tuple:
        values = trial.params or trial.system_attrs.get("fixed_params", {})
        return tuple(sorted(values.items()))

    taken = {point(t) for t in study.get_trials(deepcopy=False) if t.state.name in (
        "COMPLETE", "PRUNED", "RUNNING", "WAITING") or (t.state.name == "FAIL" and "error" in t.user_attrs)}
    missing = [p for p in space.grid_points() if tuple(sorted(p.items())) not in taken]
    for values in missing:
        study.enqueue_trial(values)
    return len(missing)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_trials(settings: SweepSettings, on_finished: Callable[[Any], None] = lambda trial: None) -> str:
    """Ask, train, tell, until the budget is spent; one worker's loop. Returns why it ended:
    "done" (budget or grid exhausted, or the deadline) or "interrupted"."""
    optuna = import_optuna()
    TrialState = optuna.trial.TrialState
    space = settings.space or load_space(settings.space_file)
    study = open_study(settings, space)
    while True:
        if settings.deadline is not None and time.time() >= settings.deadline:
            return "done"
        trials = study.get_trials(deepcopy=False)
        if settings.trials is not None and sum(map(counted, trials)) >= settings.trials:
            return "done"
        waiting = any(t.state.name == "WAITING" for t in trials)  # queued: grid points, retries
        if settings.sampler == "grid" and not waiting:
            return "done"
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        out = Path(settings.directory) / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(out))
        params = space.suggest(trial)
        # Trials compare settings on one shape: not sized to --max-time (a throughput probe's
        # noise could change the shape between trials) unless the sweep says --auto-size.
        flags = {"training.auto_size": False, **settings.sources.flags, **params,
                 "checkpoint.output_dir": str(out)}
        sources = ConfigSources(settings.sources.file, flags, settings.sources.data)
        try:
            summary = train(sources, TrainingConsole("silent"), judge=pruning_judge(trial, settings.objective))
        except UserError as exc:  # these settings cannot train (e.g. the loss diverged)
            trial.set_user_attr("error", str(exc))
            tell(study, trial, state=TrialState.FAIL)
            on_finished(study.trials[trial.number])
            continue
        value = summary[OBJECTIVES[settings.objective]]
        if summary["stop_reason"] == "interrupted":
            tell(study, trial, state=TrialState.FAIL)
            return "interrupted"
        if summary["stop_reason"] == "pruned":
            tell(study, trial, state=TrialState.PRUNED)
        elif value is None or not math.isfinite(value):
            trial.set_user_attr("error", "no validation loss")
            tell(study, trial, state=TrialState.FAIL)
        else:
            tell(study, trial, value)
        on_finished(study.trials[trial.number])


def tell(study, trial, value: float | None = None, state=None) -> None:
    """Record a finished trial. Workers sharing a study over SQLite can both be handed the
    same queued grid point; the second to finish skips it instead of failing the sweep."""
    study.tell(trial, value, state=state, skip_if_finished=True)


def pruning_judge(trial, objective: str):
    """Report each evaluation to the trial; the pruner decides whether the run goes on."""
    def judge(record: dict[str, Any]) -> bool:
        trial.report(record[objective], record["step"])
        return trial.should_prune()
    return judge


def worker_main(settings: SweepSettings) -> None:
    """The entry point of a worker process (--workers N)."""
    sys.exit(run_reporting_errors(lambda: 0 if run_trials(settings) == "done" else 130))
