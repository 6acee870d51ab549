"""Where metrics records go. A tracker is one class with `log(record)` and `finish()`:
metrics.json + loss_curve.png now; TensorBoard and W&B plug in the same way."""

from fundamentallm.tracking.base import MultiTracker, Tracker
from fundamentallm.tracking.json_log import JsonTracker, plot_losses, read_metrics

__all__ = ["JsonTracker", "MultiTracker", "Tracker", "plot_losses", "read_metrics"]
