"""Weights & Biases: the run's config once, then every metrics record and histogram.

Without an API key (no WANDB_API_KEY, no `wandb login`) the run is logged offline into
OUTPUT_DIR/wandb, to upload later with `wandb sync`; WANDB_MODE, when set, decides
instead. A resumed run becomes a new W&B run in the same group (the output directory's
name), so the pieces of an interrupted run sit together without rewriting W&B history.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from fundamentallm.errors import UserError
from fundamentallm.tracking.base import Tracker

RENAMED = {"lr": "learning_rate"}  # the name W&B dashboards usually use


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None  # where `wandb login` keeps it
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode() -> str:
    return os.environ.get("WANDB_MODE") or ("online" if has_api_key() else "offline")


class WandbTracker(Tracker):
    name = "W&B"

    def __init__(self, output_dir: str | Path, project: str, run_config: dict[str, Any],
                 resume_step: int | None = None, log_model: bool = False):
        try:
            import wandb  # the [tracking] extra
        except ImportError:
            raise UserError("--wandb needs the wandb package: pip install wandb") from None
        self.wandb, self.log_model = wandb, log_model
        self.mode = wandb_mode()
        group = Path(output_dir).resolve().name
        name = group if resume_step is None else f"{group} (resumed at step {resume_step})"
        try:
            self.run = wandb.init(project=project, dir=str(output_dir), config=run_config,
                                  mode=self.mode, name=name, group=group, job_type="train",
                                  settings=wandb.Settings(silent=True, console="off"))
        except Exception as exc:  # wandb raises its own types for network, auth and usage problems
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--wandb: could not start a W&B run ({reason}); "
                            "WANDB_MODE=offline logs it locally") from None

    def log(self, record: dict[str, Any]) -> None:
        self.run.log({RENAMED.get(k, k): v for k, v in record.items() if k != "step"},
                     step=record["step"])

    def log_histograms(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        # float64: numpy cannot cut a float32 range narrower than 64 float32 steps into 64 bins
        # (a gradient that is nearly constant), and raises
        self.run.log({tag: self.wandb.Histogram(t.double().cpu().numpy()) for tag, t in tensors.items()},
                     step=step)

    def save_model(self, path: Path) -> None:
        """final.pt as a versioned "model" artifact of this run (offline: uploaded by `wandb
        sync`, from where it lies, so keep the output directory until then)."""
        if self.log_model:
            artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model")
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def finish(self) -> None:
        self.run.finish()

    def describe(self) -> str:
        if self.mode == "offline":
            return f"W&B offline (upload later: wandb sync {Path(self.run.dir).parent})"
        return f"W&B {self.mode} ({self.run.url or self.run.project})"
