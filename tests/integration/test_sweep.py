"""`fundamentallm sweep`: Optuna trials that are ordinary runs, grid/tpe/random, pruning, a
study that survives SIGKILL, workers and machines sharing one study, best.yaml, bad input."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from helpers import run_script
from integration_helpers import (
    ROOT, assert_one_line_error, fundamentallm_command, process_env, run_cli, run_process, summary, tiny_args,
)

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it runs Optuna studies of real runs, and a PostgreSQL server.
pytestmark = pytest.mark.slow

optuna = pytest.importorskip("optuna", reason="the sweep needs Optuna (pip install 'fundamentallm[sweep]')")

# Each trial: the tiny model, 9 steps, an evaluation every 3 (three reports to the pruner).
TRIAL = {"max_steps": 9, "eval_interval": 3, "warmup_steps": 0, "log_interval": 3}


def write_space(path: Path, parameters: dict) -> Path:
    path.write_text(yaml.safe_dump({"parameters": parameters}), encoding="utf-8")
    return path


def sweep_args(corpus: Path, space: Path, out: Path, *extra: str) -> list[str]:
    """The tiny trial's flags, held fixed, but for those the space sweeps."""
    swept = yaml.safe_load(space.read_text()).get("parameters", {}) if space.exists() else {}
    fixed = tiny_args(**TRIAL, **{name: None for name in swept})
    return ["sweep", str(corpus), "--space", str(space), "-o", str(out), *fixed, *extra]


def study_of(out: Path):
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'study.db'}")


def report(out: Path, capsys) -> dict:
    capsys.readouterr()
    assert run_cli("sweep", "--report", out, "--json") == 0
    return json.loads(capsys.readouterr().out)


GRID = {"learning_rate": {"choices": [0.003, 0.01]}, "model_dim": {"choices": [16, 32]}}


def test_grid_runs_exactly_the_grid_and_leaves_ordinary_runs(tmp_path, corpus, capsys):
    space, out = write_space(tmp_path / "space.yaml", GRID), tmp_path / "sweep"
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", "grid", "--pruner", "none")) == 0
    data = report(out, capsys)
    points = sorted((t["params"]["learning_rate"], t["params"]["model_dim"]) for t in data["trials"])
    assert points == [(0.003, 16), (0.003, 32), (0.01, 16), (0.01, 32)]  # the product, each once
    assert {t["state"] for t in data["trials"]} == {"COMPLETE"}
    for trial in data["trials"]:  # each an ordinary run directory holding its parameters
        run_dir = Path(trial["run_dir"])
        assert run_dir.name == f"trial_{trial['number']:04d}" and run_dir.parent == out
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert (config["optim"]["learning_rate"], config["model"]["model_dim"]) == (
            trial["params"]["learning_rate"], trial["params"]["model_dim"])
        assert summary(run_dir)["best_val_loss"] == trial["value"]
    best = min(data["trials"], key=lambda t: t["value"])
    assert data["best"] == {"trial": best["number"], "value": best["value"], "params": best["params"]}
    for plot in ("optimization_history", "param_importances", "slice"):
        assert (out / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    # compare_experiments.py reads the sweep directory like any directory of runs
    compared = run_script("scripts/compare_experiments.py", out, "--json")
    assert compared.returncode == 0 and len(json.loads(compared.stdout)) == 4


def test_best_yaml_retrains_to_the_best_trials_loss(tmp_path, corpus, capsys):
    space, out = write_space(tmp_path / "space.yaml", GRID), tmp_path / "sweep"
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", "grid")) == 0
    best = report(out, capsys)["best"]
    assert run_cli("train", "--config", out / "best.yaml", "-o", tmp_path / "again", "--quiet") == 0
    assert summary(tmp_path / "again")["best_val_loss"] == best["value"]  # same seed: the same run


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_tpe_and_random_run(tmp_path, corpus, capsys, sampler):
    space = write_space(tmp_path / "space.yaml", {"learning_rate": {"low": 1e-3, "high": 3e-2, "log": True},
                                                  "dropout": {"low": 0.0, "high": 0.3}})
    out = tmp_path / "sweep"
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", sampler, "--trials", "3")) == 0
    err = capsys.readouterr().err
    assert err.count("trial ") >= 3 and "learning_rate=" in err  # one line per finished trial
    trials = report(out, capsys)["trials"]
    assert len(trials) == 3 and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
    assert all(1e-3 <= t["params"]["learning_rate"] <= 3e-2 and 0 <= t["params"]["dropout"] <= 0.3
               for t in trials)
    assert len({t["params"]["learning_rate"] for t in trials}) == 3


def test_pruning_stops_hopeless_trials_early(tmp_path, corpus, capsys):
    space = write_space(tmp_path / "space.yaml", {"learning_rate": {"low": 1e-8, "high": 2e-2, "log": True}})
    out = tmp_path / "sweep"
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", "random", "--trials", "8",
                               "--sampler-seed", "3")) == 0
    trials = report(out, capsys)["trials"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert pruned and complete
    best_lr = min(complete, key=lambda t: t["value"])["params"]["learning_rate"]
    for trial in pruned:  # the hopeless ones: far smaller rates, stopped at an evaluation
        assert trial["params"]["learning_rate"] < best_lr
        s = summary(Path(trial["run_dir"]))
        assert s["stop_reason"] == "pruned" and s["steps"] < 9
        assert (Path(trial["run_dir"]) / "final.pt").is_file()  # still a valid run directory


def test_a_killed_sweep_continues_where_it_was(tmp_path, corpus):
    """SIGKILL while a trial runs; the same command again: finished trials stay finished, the
    trial numbers go on, and every grid point ends up done exactly once."""
    grid = {"learning_rate": {"choices": [0.003, 0.006, 0.01, 0.02]}}
    space, out = write_space(tmp_path / "space.yaml", grid), tmp_path / "sweep"
    argv = [*sweep_args(corpus, space, out, "--sampler", "grid", "--pruner", "none"), "--max-steps", "300",
            "--eval-interval", "100"]
    proc = subprocess.Popen(fundamentallm_command(*argv), cwd=ROOT, env=process_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not (len(list(out.glob("trial_*/summary.json"))) >= 2 and len(list(out.glob("trial_*"))) >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended or stalled"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: (t.state.name, t.value) for t in study_of(out).get_trials()}
    finished_before = {n: v for n, (state, v) in before.items() if state == "COMPLETE"}
    assert len(finished_before) >= 2 and "RUNNING" in {s for s, _ in before.values()}

    result = run_process(*argv, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "marked failed" in result.stderr and "continuing the study" in result.stderr
    after = study_of(out).get_trials()
    assert [t.number for t in after] == list(range(len(after)))  # the numbers went on
    for number, value in finished_before.items():  # nothing finished was lost or redone
        assert after[number].state.name == "COMPLETE" and after[number].value == value
    complete = [t for t in after if t.state.name == "COMPLETE"]
    assert sorted(t.params["learning_rate"] for t in complete) == [0.003, 0.006, 0.01, 0.02]
    killed = [t for t in after if t.number in before and before[t.number][0] == "RUNNING"]
    assert killed and all(t.state.name == "FAIL" for t in killed)


def test_two_workers_share_one_sqlite_study(tmp_path, corpus, capsys):
    space, out = write_space(tmp_path / "space.yaml", GRID), tmp_path / "sweep"
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", "grid", "--workers", "2")) == 0
    trials = study_of(out).get_trials()
    assert len(trials) == 4 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # both processes took trials
    assert len({(t.params["learning_rate"], t.params["model_dim"]) for t in trials}) == 4


# ---------------------------------------------------------------- PostgreSQL
def postgres_binaries() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists() and (base / "pg_ctl").exists():
            return base
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


@pytest.fixture
def postgres(tmp_path):
    """A PostgreSQL server of Debian's packages in a temporary directory, on a free port."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'fundamentallm[sweep]')")
    user = "postgres" if os.geteuid() == 0 else None  # the server refuses to run as root
    if user is not None:
        try:
            pwd.getpwnam(user)
        except KeyError:
            pytest.skip("running as root without a 'postgres' user to run the server as")
    # Not below tmp_path: pytest's base directory is private to this user, the server's user
    # could not reach it.
    data = Path(tempfile.mkdtemp(prefix="fundamentallm-pg-"))
    if user is not None:
        shutil.chown(data, user)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def as_server(*argv: str) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", user, "--"] if user is not None else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)

    done = as_server(str(binaries / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"initdb failed: {done.stderr.strip().splitlines()[-1:]}")
    started = as_server(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(data / "log.txt"), "-w", "-o",
                        f"-p {port} -k {data} -h 127.0.0.1", "start")
    if started.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        pytest.skip(f"PostgreSQL did not start: {started.stderr.strip().splitlines()[-1:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        as_server(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


def test_two_processes_share_one_postgresql_study(tmp_path, corpus, postgres):
    space = write_space(tmp_path / "space.yaml", GRID)
    processes = [subprocess.Popen(fundamentallm_command(*sweep_args(
        corpus, space, tmp_path / name, "--sampler", "grid", "--storage", postgres)), cwd=ROOT, env=process_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("machine_a", "machine_b")]
    for proc in processes:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    trials = optuna.load_study(study_name="sweep", storage=postgres).get_trials()
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len({(t.params["learning_rate"], t.params["model_dim"]) for t in finished}) == 4
    assert len({t.user_attrs["pid"] for t in trials}) == 2
    assert {Path(t.user_attrs["run_dir"]).parent.name for t in trials} == {"machine_a", "machine_b"}


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("parameters, fragment", [
    ({"learning_rat": {"low": 0.1, "high": 0.2}}, "unknown option 'learning_rat'"),
    ({"output_dir": {"choices": ["a", "b"]}}, "--output-dir is the sweep's, not a trial's"),
    ({"learning_rate": {"low": 0.2, "high": 0.1}}, "empty or inverted range"),
    ({"learning_rate": {"low": 0.1, "high": 0.1}}, "empty or inverted range"),
    ({"model_dim": {"choices": [32, 0]}}, "model_dim must be greater than 0 (got 0)"),
    ({"activation": {"choices": ["relu2", "tanh"]}}, "unknown value 'tanh'"),
    ({"model_dim": {"choices": []}}, "choices must be a non-empty list"),
    ({"num_heads": {"choices": [2, 3]}}, "cannot start (num_heads=3)"),
    ({"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "must be greater than 0"),
])
def test_bad_spaces_are_one_line_errors(tmp_path, corpus, parameters, fragment):
    space = write_space(tmp_path / "space.yaml", parameters)
    result = run_process(*sweep_args(corpus, space, tmp_path / "sweep"))
    assert fragment in assert_one_line_error(result)
    assert not (tmp_path / "sweep").exists()  # checked before anything was created


@pytest.mark.parametrize("extra, fragment", [
    (["--sampler", "grid", "--space", "{range}"], "--sampler grid needs a list of choices"),
    (["--storage", "postgresql://nobody@127.0.0.1:1/none"], "cannot open the study storage"),
    (["--storage", "nosuchdb://x"], "--storage nosuchdb://x"),
    (["--learning-rate", "0.01"], "--learning-rate is both held fixed and swept"),
    (["--space", "{missing}"], "no such config file"),
    (["--val-split", "0"], "the objective is a validation loss"),
])
def test_bad_sweep_settings_are_one_line_errors(tmp_path, corpus, extra, fragment):
    space = write_space(tmp_path / "space.yaml", {"learning_rate": {"choices": [0.01, 0.02]}})
    ranged = write_space(tmp_path / "range.yaml", {"learning_rate": {"low": 0.01, "high": 0.02}})
    extra = [e.format(range=ranged, missing=tmp_path / "none.yaml") for e in extra]
    result = run_process(*sweep_args(corpus, space, tmp_path / "sweep"), *extra)
    assert fragment in assert_one_line_error(result)


def test_report_of_no_sweep_is_an_error(tmp_path):
    assert "no sweep here" in assert_one_line_error(run_process("sweep", "--report", tmp_path))


def test_fixed_settings_can_come_from_a_config_file(tmp_path, corpus, capsys):
    """The settings every trial shares, from --config (flags still win over it)."""
    config = tmp_path / "fixed.yaml"
    config.write_text(yaml.safe_dump({"training": {"max_steps": 4}, "optim": {"weight_decay": 0.05}}),
                      encoding="utf-8")
    space, out = write_space(tmp_path / "space.yaml", {"learning_rate": {"choices": [0.003, 0.01]}}), tmp_path / "s"
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", "grid", "--config", config, "--max-steps", "6")) == 0
    for trial in report(out, capsys)["trials"]:
        run_dir = Path(trial["run_dir"])
        config_used = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config_used["optim"]["weight_decay"] == 0.05  # from the file
        assert summary(run_dir)["steps"] == 6  # the flag over the file


def test_objective_pruner_study_name_quiet_and_timeout(tmp_path, corpus, capsys):
    space = write_space(tmp_path / "space.yaml", {"learning_rate": {"choices": [0.003, 0.01]}})
    out = tmp_path / "bits"
    capsys.readouterr()
    assert run_cli(*sweep_args(corpus, space, out, "--sampler", "grid", "--objective", "val_bits_per_char",
                               "--pruner", "hyperband", "--study-name", "mine", "--quiet")) == 0
    assert capsys.readouterr() == ("", "")  # --quiet: nothing on stdout or stderr
    study = optuna.load_study(study_name="mine", storage=f"sqlite:///{out / 'study.db'}")
    assert study.user_attrs["objective"] == "val_bits_per_char"
    for trial in study.get_trials():  # the objective is bits per character, not nats per token
        assert trial.state.name in ("COMPLETE", "PRUNED")
        if trial.state.name == "COMPLETE":
            assert trial.value == summary(Path(trial.user_attrs["run_dir"]))["best_val_bits_per_char"]
    assert run_cli("sweep", "--report", out, "--study-name", "mine", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)["trials"]) == 2
    assert "no study 'sweep'" in assert_one_line_error(run_process("sweep", "--report", out))
    # --timeout: no new trial starts once it has passed (here: before the first)
    late = tmp_path / "late"
    assert run_cli(*sweep_args(corpus, space, late, "--sampler", "grid", "--timeout", "0.001")) == 0
    assert study_of(late).get_trials(states=(optuna.trial.TrialState.COMPLETE,)) == []
    assert "no trial has finished yet" in capsys.readouterr().out
