"""TensorBoard event files, written into the run's output directory.

Each run directory becomes one run in TensorBoard, so `tensorboard --logdir experiments/`
shows a grid search side by side. The tags are the customary ones: `Loss/train`,
`Loss/val`, `LR`, `Weights/<name>`, `Gradients/<name>`; gradient checks add
`GradNorm/<name>` and `GradRatio/<name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fundamentallm.errors import UserError
from fundamentallm.tracking.base import Tracker

# metrics record key -> TensorBoard tag; keys not named here are not scalars worth a chart.
TAGS = {
    "train_loss": "Loss/train",
    "val_loss": "Loss/val",
    "val_bits_per_char": "Loss/val_bits_per_char",
    "lr": "LR",
    "grad_norm": "Gradients/global_norm",
    "tokens_per_s": "Speed/tokens_per_s",
    "epoch": "Progress/epoch",
}


class TensorBoardTracker(Tracker):
    """Scalars for every record, histograms when the loop sends them.

    On resume at step S, `purge_step=S + 1` makes TensorBoard hide what the interrupted
    run logged after its last checkpoint, so the curves read as one run.
    """

    name = "TensorBoard"

    def __init__(self, log_dir: str | Path, resume_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter  # the [tracking] extra
        except ImportError:  # torch's writer needs the tensorboard package
            raise UserError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir),
                                    purge_step=None if resume_step is None else resume_step + 1)

    def log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, tag in TAGS.items():
            if key in record:
                self.writer.add_scalar(tag, record[key], step)
        for name, stats in record.get("gradients", {}).items():  # --grad-check-interval
            self.writer.add_scalar(f"GradNorm/{name}", stats["grad_norm"], step)
            self.writer.add_scalar(f"GradRatio/{name}", stats["ratio"], step)

    def log_histograms(self, step: int, tensors: dict[str, torch.Tensor]) -> None:
        for tag, tensor in tensors.items():
            self.writer.add_histogram(tag, tensor.float().cpu(), step)

    def flush(self) -> None:
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()

    def describe(self) -> str:
        return f"TensorBoard (tensorboard --logdir {self.log_dir})"
