"""TensorBoard and W&B trackers, build_tracker, and the weights/gradients they draw."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from fundamentallm.config import TrackingConfig
from fundamentallm.errors import UserError
from fundamentallm.tracking import (
    JsonTracker, MultiTracker, TensorBoardTracker, WandbTracker, build_tracker, weights_and_gradients,
)
from fundamentallm.tracking import wandb_log


def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    return events


def scalars(events, tag):
    return [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]


# ---- TensorBoard ----

def test_tensorboard_writes_the_specs_tags(tmp_path):
    tracker = TensorBoardTracker(tmp_path)
    tracker.log({"step": 10, "train_loss": 3.5, "lr": 0.01, "tokens": 640, "epoch": 0.1})
    tracker.log({"step": 20, "train_loss": 3.0, "val_loss": 3.25, "lr": 0.02, "best": True})
    tracker.log_histograms(20, {"Weights/w": torch.arange(6.0), "Gradients/w": torch.ones(6)})
    tracker.finish()
    events = read_events(tmp_path)
    assert scalars(events, "Loss/train") == [(10, 3.5), (20, 3.0)]
    assert scalars(events, "Loss/val") == [(20, 3.25)]
    assert scalars(events, "LR") == [(10, 0.01), (20, 0.02)]
    assert "Progress/epoch" in events.Tags()["scalars"]
    assert not [t for t in events.Tags()["scalars"] if "tokens" in t or "best" in t]
    weights = events.Histograms("Weights/w")
    assert [h.step for h in weights] == [20]
    assert (weights[0].histogram_value.min, weights[0].histogram_value.max) == (0.0, 5.0)
    assert weights[0].histogram_value.num == 6


def test_tensorboard_resume_hides_what_came_after_the_checkpoint(tmp_path):
    first = TensorBoardTracker(tmp_path)
    for step in (10, 20, 30, 40):
        first.log({"step": step, "train_loss": 1.0})
    first.finish()
    resumed = TensorBoardTracker(tmp_path, resume_step=20)  # steps 30, 40 were lost
    resumed.log({"step": 30, "train_loss": 0.5})
    resumed.finish()
    assert scalars(read_events(tmp_path), "Loss/train") == [(10, 1.0), (20, 1.0), (30, 0.5)]


def test_tensorboard_without_the_package_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(UserError, match="pip install tensorboard"):
        TensorBoardTracker(tmp_path)


# ---- W&B, against a recording stand-in for the wandb package ----

class FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged, self.artifacts, self.finished = [], [], False
        self.id, self.dir = "abc123", "/runs/x/wandb/offline-run-1/files"
        self.url, self.project = None, kwargs["project"]

    def log(self, data, step):
        self.logged.append((step, data))

    def log_artifact(self, artifact):
        self.artifacts.append(artifact)

    def finish(self):
        self.finished = True


class FakeArtifact:
    def __init__(self, name, type):
        self.name, self.type, self.files = name, type, []

    def add_file(self, path):
        self.files.append(path)


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    module = types.SimpleNamespace(runs=[])

    def init(**kwargs):
        module.runs.append(FakeRun(**kwargs))
        return module.runs[-1]

    module.init = init
    module.Settings = lambda **kw: kw
    module.Histogram = lambda values: ("histogram", values.tolist())
    module.Artifact = FakeArtifact
    monkeypatch.setitem(sys.modules, "wandb", module)
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    return module


def test_wandb_logs_config_records_and_histograms(tmp_path, fake_wandb):
    out = tmp_path / "baseline"
    tracker = WandbTracker(out, "proj", {"model": {"model_dim": 32}})
    run = fake_wandb.runs[0]
    assert run.init["project"] == "proj" and run.init["config"] == {"model": {"model_dim": 32}}
    assert run.init["name"] == run.init["group"] == "baseline"
    assert run.init["dir"] == str(out)
    assert run.init["mode"] == "offline"  # no API key anywhere
    assert "wandb sync" in tracker.describe()
    tracker.log({"step": 10, "train_loss": 2.0, "lr": 0.5, "epoch": 0.2})
    tracker.log_histograms(10, {"Weights/w": torch.tensor([1.0, 2.0])})
    tracker.finish()
    assert run.logged == [(10, {"train_loss": 2.0, "learning_rate": 0.5, "epoch": 0.2}),
                          (10, {"Weights/w": ("histogram", [1.0, 2.0])})]
    assert run.finished


def test_wandb_logs_the_model_only_when_asked(tmp_path, fake_wandb):
    final = tmp_path / "final.pt"
    WandbTracker(tmp_path, "proj", {}).save_model(final)
    assert fake_wandb.runs[0].artifacts == []
    WandbTracker(tmp_path, "proj", {}, log_model=True).save_model(final)
    [artifact] = fake_wandb.runs[1].artifacts
    assert (artifact.name, artifact.type, artifact.files) == ("model-abc123", "model", [str(final)])


def test_wandb_resume_starts_a_new_run_in_the_same_group(tmp_path, fake_wandb):
    WandbTracker(tmp_path / "baseline", "proj", {}, resume_step=500)
    run = fake_wandb.runs[0]
    assert run.init["group"] == "baseline"
    assert run.init["name"] == "baseline (resumed at step 500)"


def test_wandb_mode_follows_key_and_environment(tmp_path, fake_wandb, monkeypatch):
    assert wandb_log.wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_log.wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_log.wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    (tmp_path / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_log.wandb_mode() == "online"


def test_wandb_start_failure_is_one_line(tmp_path, fake_wandb):
    def refuse(**kwargs):
        raise RuntimeError("api key not configured (no-tty)\ncall wandb.login")

    fake_wandb.init = refuse
    with pytest.raises(UserError, match=r"could not start a W&B run \(api key not configured \(no-tty\)\)") as err:
        WandbTracker(tmp_path, "proj", {})
    assert "\n" not in str(err.value)


def test_wandb_without_the_package_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(UserError, match="pip install wandb"):
        WandbTracker(tmp_path, "proj", {})


# ---- build_tracker and what gets drawn ----

def test_build_tracker_adds_what_is_asked_for(tmp_path, fake_wandb):
    alone = build_tracker(TrackingConfig(), tmp_path, {})
    assert isinstance(alone, JsonTracker)
    both = build_tracker(TrackingConfig(tensorboard=True, wandb=True, wandb_project="mine"), tmp_path, {})
    assert fake_wandb.runs[0].init["project"] == "mine"
    assert isinstance(both, MultiTracker)
    assert [type(t) for t in both.trackers] == [JsonTracker, TensorBoardTracker, WandbTracker]
    assert both.describe().startswith("metrics.json; TensorBoard")
    both.finish()


def test_weights_and_gradients_skip_frozen_and_gradient_free_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].bias.requires_grad_(False)
    model(torch.ones(1, 3)).sum().backward()
    model[1].bias.grad = None  # e.g. a parameter the loss did not reach
    tensors = weights_and_gradients(model)
    assert sorted(tensors) == ["Gradients/0.weight", "Gradients/1.weight",
                               "Weights/0.weight", "Weights/1.bias", "Weights/1.weight"]
    assert torch.equal(tensors["Gradients/1.weight"], model[1].weight.grad)
