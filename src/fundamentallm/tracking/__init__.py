"""Where metrics records go. A tracker is one class with `log(record)`, `log_histograms`,
`save_model`, `flush()` and `finish()`: metrics.json + loss_curve.png always, TensorBoard and W&B when
asked for; `build_tracker` puts the run's trackers behind one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fundamentallm.config import TrackingConfig
from fundamentallm.tracking.base import MultiTracker, Tracker, weights_and_gradients
from fundamentallm.tracking.json_log import JsonTracker, plot_losses, read_metrics
from fundamentallm.tracking.tensorboard import TensorBoardTracker  # imports tensorboard only when built
from fundamentallm.tracking.wandb_log import WandbTracker  # imports wandb only when built


def build_tracker(cfg: TrackingConfig, output_dir: str | Path, run_config: dict[str, Any],
                  resume_step: int | None = None) -> Tracker:
    """The run's trackers; `run_config` (the resolved config as a dict) goes to W&B."""
    trackers: list[Tracker] = [JsonTracker(output_dir, resume_step)]
    if cfg.tensorboard:
        trackers.append(TensorBoardTracker(output_dir, resume_step))
    if cfg.wandb:
        trackers.append(WandbTracker(output_dir, cfg.wandb_project, run_config, resume_step,
                                     log_model=cfg.wandb_log_model))
    return trackers[0] if len(trackers) == 1 else MultiTracker(trackers)


__all__ = ["JsonTracker", "MultiTracker", "TensorBoardTracker", "Tracker", "WandbTracker", "build_tracker",
           "plot_losses", "read_metrics", "weights_and_gradients"]
