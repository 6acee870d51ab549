"""Document-masked packing (`--doc-mask`): a window of packed documents, each on its own.

Training windows are cut from documents joined by the end-of-text token, so one window
holds the end of one document and the starts of others. Plain causal attention lets a
token see the documents before it in the window, which have nothing to do with it; with
`--doc-mask` each token attends only within its own document and its position restarts at
the document's start, as if the document were alone in the window (block-causal attention,
as torchtitan and nanochat pack documents; Krell et al. 2021 measure the cross-document
contamination that it removes).
"""

from __future__ import annotations

import torch
from torch import nn


def document_ids(idx: torch.Tensor, eos_id: int) -> torch.Tensor:
    """idx (B, T) → each token's document number within its window (B, T). An end-of-text
    token belongs to the document it ends; the token after it starts the next."""
    ends = (idx == eos_id).to(torch.int32)  # (B, T)
    return ends.cumsum(dim=1) - ends  # (B, T): the end-of-text tokens before each token


class DocumentMasked(nn.Module):
    """The model, called with each window's documents kept apart. Chosen once, at setup, for
    the training step and for scoring; the checkpoint holds the model itself."""

    def __init__(self, model: nn.Module, eos_id: int):
        super().__init__()
        self.model, self.eos_id = model, eos_id

    @property
    def cfg(self):
        return self.model.cfg

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                reduction: str = "mean") -> torch.Tensor:
        return self.model(idx, targets, reduction=reduction, documents=document_ids(idx, self.eos_id))
