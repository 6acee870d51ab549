"""From token ids to training batches: windows, targets and the epoch order.

Text is tokenised once into one int32 tensor (or a memory-mapped token cache). An epoch is one pass over the training
tokens in non-overlapping windows of `context_length + 1` tokens, visited in a random
order. The order of epoch `e` is a pure function of (seed, e), so the position in the
data is two integers (epoch, micro-batch) and a resumed run sees exactly the batches the
uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from fundamentallm.data.augment import augment, slack
from fundamentallm.errors import UserError
from fundamentallm.tokenizers import Special, Tokenizer

IGNORE_INDEX = -100  # target id that the loss does not score (F.cross_entropy's default)


def encode(tokenizer: Tokenizer, text: str | list[str]) -> torch.Tensor:
    """Text (or the pieces of a text stream, `Special` ones included) → 1-D int32 tensor of
    token ids (int32 halves the memory of int64)."""
    if isinstance(text, list) and len(text) == 1 and not isinstance(text[0], Special):
        text = text[0]  # one text: encoded whole, as it always was
    if isinstance(text, str):
        return torch.from_numpy(tokenizer.encode_array(text).astype(np.int32))
    return torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *tokenizer.encode_stream(text)]).astype(np.int32))


def read_windows(ids: torch.Tensor | np.ndarray, starts: torch.Tensor, length: int) -> torch.Tensor:
    """ids (N,) (a tensor, or a memory-mapped array of cached tokens), starts (B,) →
    (B, length) int64, gathered in one indexing op; a window running past the end wraps to
    the start."""
    index = (starts[:, None] + torch.arange(length)) % len(ids)  # (B, length)
    if isinstance(ids, np.ndarray):  # reads only these windows' pages from disk
        return torch.from_numpy(ids[index.numpy()].astype(np.int64 if ids.dtype != bool else bool))
    return ids[index].long()


def make_batch(ids: torch.Tensor | np.ndarray, starts: torch.Tensor, length: int, unk_id: int | None,
               trained: np.ndarray | None = None):
    """Windows of `length` inputs and their next-token targets: x (B, length), y (B, length);
    with `trained` (a bool per id), the targets it marks False are not scored."""
    x, y = split_window(read_windows(ids, starts, length + 1), unk_id)
    if trained is not None:
        y[~read_windows(trained, starts, length + 1)[:, 1:].bool()] = IGNORE_INDEX
    return x, y


def split_window(window: torch.Tensor, unk_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """window (B, length + 1) → inputs x (B, length) and targets y (B, length), shifted by one."""
    x, y = window[:, :-1], window[:, 1:].clone()
    if unk_id is not None:
        y[y == unk_id] = IGNORE_INDEX  # a character never seen in training is not a target
    return x, y


class EpochSampler:
    """Random non-overlapping windows, epoch by epoch, reproducible from (seed, epoch)."""

    def __init__(self, ids: torch.Tensor, *, context_length: int, batch_size: int,
                 grad_accum_steps: int, seed: int, unk_id: int | None, overfit_batches: int = 0,
                 augment_p: float = 0.0, rank: int = 0, world_size: int = 1):
        if len(ids) < context_length + 1:
            raise UserError(
                f"training data has {len(ids)} tokens; --context-length {context_length} needs "
                f"at least {context_length + 1} (use a shorter context or more text)"
            )
        self.ids, self.context, self.batch = ids, context_length, batch_size
        self.seed, self.unk_id, self.augment_p = seed, unk_id, augment_p
        # With several processes, each takes every world_size-th batch of one shared order.
        self.rank, self.world = rank, world_size
        windows = (len(ids) - 1) // context_length
        # Whole optimizer steps per epoch; at least one, even if that repeats windows.
        self.steps_per_epoch = max(1, windows // (batch_size * grad_accum_steps * world_size))
        self.micro_per_epoch = self.steps_per_epoch * grad_accum_steps
        self.overfit = overfit_batches > 0
        if self.overfit:  # every epoch is epoch 0's first `overfit_batches` micro-batches
            self.micro_per_epoch = overfit_batches
            self.steps_per_epoch = overfit_batches // grad_accum_steps
        self._epoch, self._starts = -1, torch.empty(0)

    def _epoch_starts(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            need = self.micro_per_epoch * self.batch * self.world
            # A random shift per epoch, so windows do not always cut the text at the same
            # places; at most the tokens to spare, so the epoch's windows are all distinct.
            windows = (len(self.ids) - 1) // self.context
            spare = len(self.ids) - 1 - min(need, windows) * self.context
            offset = int(torch.randint(0, min(self.context, spare + 1), (1,), generator=g))
            count = (len(self.ids) - 1 - offset) // self.context
            # int32: the same permutation as int64, made faster; the window starts stay int32
            # unless the text has 2**31 tokens or more (widening 30M of them: 0.4 s per start).
            order = torch.randperm(count, generator=g, dtype=torch.int32)
            order = order if len(self.ids) < 1 << 31 else order.long()
            if need > count:  # repeats only when data is short
                order = order.repeat(-(-need // count))
            self._epoch, self._starts = epoch, order[:need].mul_(self.context).add_(offset)
        return self._starts

    def step_targets(self, epoch: int, micro_batch: int, accum: int) -> None:
        """None: every window is full of targets, so each micro-batch's mean loss counts alike."""
        return None

    def batch_at(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's micro-batch `index` of `epoch`: x, y of shape (batch, context_length)."""
        epoch = 0 if self.overfit else epoch  # --overfit-batches: every epoch is epoch 0, edits included
        row = index * self.world + self.rank  # which batch of the shared order
        starts = self._epoch_starts(epoch)[row * self.batch:(row + 1) * self.batch]
        if not self.augment_p:
            return make_batch(self.ids, starts, self.context, self.unk_id)
        # Augmented: a longer stretch, edited, cut back to length; the edits are a pure function
        # of (seed, epoch, batch), so a resumed run sees the same batches.
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 1_000_033 + row + 1)
        longer = read_windows(self.ids, starts, self.context + 1 + slack(self.context + 1, self.augment_p))
        window = augment(longer, self.context + 1, self.augment_p, g)  # (B, context + 1)
        return split_window(window, self.unk_id)


class PackedSampler:
    """Whole documents packed into windows, for conversations (`--format chat`): each window
    starts at a conversation's start, holds as many whole ones as fit (in a random order per
    epoch, reproducible from (seed, epoch)), and is padded with end-of-text tokens that are
    not targets. A conversation longer than the window is cut to it: its end is not trained on
    (`truncated` counts them). Only the targets `trained` marks are scored.

    Random windows over the stream would start most windows inside a conversation, training
    on answers whose questions were cut away; packing whole ones (as litgpt, torchtune and
    TRL do) keeps every answer with its context."""

    def __init__(self, ids: torch.Tensor, trained: np.ndarray, eos_id: int, *, context_length: int, batch_size: int,
                 grad_accum_steps: int, seed: int, unk_id: int | None, overfit_batches: int = 0,
                 rank: int = 0, world_size: int = 1):
        ends = np.flatnonzero(np.asarray(ids) == eos_id)  # each conversation ends with the end-of-text token
        if not len(ends):
            raise UserError("no conversation to train on")
        self.starts = np.concatenate([[0], ends[:-1] + 1])
        self.capacity = context_length + 1  # the inputs and, shifted by one, the targets
        self.lengths = np.minimum(ends + 1 - self.starts, self.capacity)
        self.truncated = int((ends + 1 - self.starts > self.capacity).sum())
        self.ids, self.trained, self.eos_id = ids, torch.from_numpy(trained), eos_id
        self.batch, self.seed, self.unk_id, self.rank, self.world = batch_size, seed, unk_id, rank, world_size
        self.context = context_length
        self._epoch, self._rows = -1, []
        rows = len(self._pack(0))
        self.steps_per_epoch = max(1, rows // (batch_size * grad_accum_steps * world_size))
        self.micro_per_epoch = self.steps_per_epoch * grad_accum_steps
        self.overfit = overfit_batches > 0
        if self.overfit:
            self.micro_per_epoch, self.steps_per_epoch = overfit_batches, overfit_batches // grad_accum_steps

    def _pack(self, epoch: int) -> list[list[tuple[int, int]]]:
        """The epoch's windows, each a list of (start, length) conversations: greedily, in a
        random order, a conversation opening a new window when it does not fit in the current one."""
        if epoch != self._epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
            rows, row, used = [], [], 0
            for d in torch.randperm(len(self.starts), generator=g).tolist():
                length = int(self.lengths[d])
                if used + length > self.capacity:
                    rows.append(row)
                    row, used = [], 0
                row.append((int(self.starts[d]), length))
                used += length
            self._epoch, self._rows = epoch, rows + [row]
        return self._rows

    def batch_at(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's micro-batch `index` of `epoch`: x, y of shape (batch, context_length)."""
        rows = self._pack(0 if self.overfit else epoch)
        first = (index * self.world + self.rank) * self.batch
        window = torch.full((self.batch, self.capacity), self.eos_id, dtype=torch.long)  # (B, context + 1)
        scored = torch.zeros(self.batch, self.capacity, dtype=torch.bool)
        for b in range(self.batch):
            used = 0
            for start, length in rows[(first + b) % len(rows)]:  # an epoch short of windows repeats its own
                window[b, used:used + length] = torch.as_tensor(self.ids[start:start + length]).long()
                scored[b, used:used + length] = self.trained[start:start + length]
                used += length
        x, y = split_window(window, self.unk_id)
        y[~scored[:, 1:]] = IGNORE_INDEX
        return x, y

    def step_targets(self, epoch: int, micro_batch: int, accum: int) -> int:
        """How many targets this process scores in the step of `accum` micro-batches from
        `micro_batch`: the step's loss is their mean, whatever micro-batch each is in."""
        return sum(int((self.batch_at(epoch, micro_batch + m)[1] != IGNORE_INDEX).sum()) for m in range(accum))


def scoring_windows(num_tokens: int, context_length: int, max_windows: int | None = None):
    """Non-overlapping (start, length) windows that score every target token once.

    Target token t (t >= 1) is predicted from the window holding position t - 1. With
    `max_windows`, an evenly spaced subset is taken instead (for quick validation).
    """
    count = -(-(num_tokens - 1) // context_length)  # windows of the whole text, the last one short
    if max_windows is not None and count > max_windows:
        # The subset is computed, not picked from a list of every window: a gigabyte corpus has
        # tens of millions of them. Full windows are the first (num_tokens - 1) // context.
        step = ((num_tokens - 1) // context_length) / max_windows
        return [(int(i * step) * context_length, context_length) for i in range(max_windows)]
    return [(s, min(context_length, num_tokens - 1 - s)) for s in range(0, num_tokens - 1, context_length)]
