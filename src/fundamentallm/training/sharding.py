"""How the weights are laid out over the processes: replicated (one process, or DDP), or
sharded with FSDP2 (`--fsdp`).

FSDP (Zhao et al. 2023, "PyTorch FSDP"; FSDP2 is `torch.distributed.fsdp.fully_shard`,
which shards each parameter as a DTensor) keeps 1/N of every parameter, its gradient and
its optimizer state on each of N processes. Each transformer block is its own unit: its
weights are gathered just before its forward (and again for its backward) and freed
after, so at most a block or two is whole at once; gradients are reduce-scattered, each
process keeping its shard. With `--fsdp-reshard-after-forward` off, a block's gathered
weights stay from its forward to its backward: one all-gather fewer per block, more memory.
Mixed precision goes through FSDP's `MixedPrecisionPolicy`: weights gathered in bf16 for
the compute, gradients reduced and kept in fp32, the fp32 shards updated.

Checkpoints do not depend on the layout. `model_state` and `optimizer_state` return the
single-process form on rank 0 (a sharded run gathers it: every process takes part), so
`final.pt` evaluates anywhere and a resume checkpoint continues on any number of
processes, sharded or not (FSDP -> DDP, 2 -> 1, 1 -> 2). `load` is the inverse: each
process reads the whole state and keeps its shards.

For a model too large to gather on one process, `--sharded-resume` writes the resume state
with torch.distributed.checkpoint instead (`save_sharded`): every process writes its own
shards, in parallel, and loading reshards them for whatever layout continues
(`load_sharded`). The layout on disk (training/checkpointer.py):

    OUTPUT_DIR/resume_checkpoint.pt               config, tokenizer, counters, random states,
                                                  and the name and checksums of its shard directory
    OUTPUT_DIR/resume_checkpoint.dcp/step_N/      .metadata, __0_0.distcp, __1_0.distcp, ...
                                                  (model and optimizer state, by parameter name)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fundamentallm.model import GPT


class OptimizerMismatch(Exception):
    """A saved optimizer state whose parameter groups are not this run's: the checkpoint was
    written by a version that grouped the parameters otherwise (its own rate for the embedding,
    the untied head moved out of Muon) or with other optimizer settings."""


class Replicated:
    """Every process holds the whole model (one process, or DDP)."""

    name = "replicated"

    def model_state(self, model: torch.nn.Module) -> dict[str, Any]:
        return model.state_dict()

    def optimizer_state(self, model: torch.nn.Module, optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load(self, model: torch.nn.Module, optimizer, model_state: dict[str, Any],
             optimizer_state: dict[str, Any]) -> None:
        model.load_state_dict(model_state)
        try:
            optimizer.load_state_dict(optimizer_state)
        except ValueError as error:  # torch's check: the parameter groups differ in number or in size
            raise OptimizerMismatch(str(error)) from error

    # ---- the resume state written in shards (--sharded-resume): torch.distributed.checkpoint ----
    def save_sharded(self, model: torch.nn.Module, optimizer, directory: Path) -> None:
        """Every process writes its own part of the model and optimizer state (DCP: one
        `__RANK_0.distcp` file each, and `.metadata`); a replicated tensor is written once."""
        # torch.distributed's checkpoint and FSDP modules take ~0.6 s to import: loaded here, in
        # the distributed runs that use them, not by every run that imports this module.
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(directory))

    def load_sharded(self, model: torch.nn.Module, optimizer, directory: Path) -> None:
        """Read a sharded state into this run's layout, whatever layout wrote it (DCP reshards)."""
        import torch.distributed.checkpoint as dcp  # ~0.6 s to import: see save_sharded
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optimizer_state = get_state_dict(model, optimizer)  # the shapes to fill
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=str(directory))
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


class Sharded(Replicated):
    """FSDP2: each process holds a shard of every parameter, gradient and optimizer state."""

    name = "fsdp"

    def __init__(self, model: GPT, mixed: torch.dtype | None, reshard_after_forward: bool):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # ~0.6 s: see save_sharded

        policy = MixedPrecisionPolicy(param_dtype=mixed, reduce_dtype=torch.float32) if mixed else \
            MixedPrecisionPolicy()
        for block in model.blocks:  # one unit per block: gathered for its forward and backward only
            fully_shard(block, mp_policy=policy, reshard_after_forward=reshard_after_forward)
        fully_shard(model, mp_policy=policy)  # the root: embeddings, final norm, head

    @staticmethod
    def full(**extra):
        from torch.distributed.checkpoint.state_dict import StateDictOptions  # see save_sharded

        return StateDictOptions(full_state_dict=True, **extra)

    def model_state(self, model: torch.nn.Module) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict  # see save_sharded

        state = get_model_state_dict(model, options=self.full(cpu_offload=True))  # {} off rank 0
        if state and getattr(model.cfg, "tie_embeddings", False):
            state.setdefault("head.weight", state["embed.weight"])  # one matrix under both names, as a plain state dict
        return state

    def optimizer_state(self, model: torch.nn.Module, optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict  # see save_sharded

        by_name = get_optimizer_state_dict(model, optimizer, options=self.full(cpu_offload=True))
        return by_index(by_name) if by_name else {}

    def load(self, model: torch.nn.Module, optimizer, model_state: dict[str, Any],
             optimizer_state: dict[str, Any]) -> None:
        # see save_sharded
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, model_state, options=self.full())
        set_optimizer_state_dict(model, optimizer, by_name(optimizer_state, model, optimizer), options=self.full())


def by_index(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (torch.distributed.checkpoint's form) →
    keyed by position, as `optimizer.state_dict()` of the same optimizer on one process is."""
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        groups.append({**group, "params": [index.setdefault(name, len(index)) for name in group["params"]]})
    return {"state": {index[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def by_name(state: dict[str, Any], model: torch.nn.Module, optimizer) -> dict[str, Any]:
    """The inverse of `by_index`, for this model and optimizer (the same groups, in order)."""
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    groups = [{**saved, "params": [order[i] for i in saved["params"]]} for saved in state["param_groups"]]
    return {"state": {order[i]: value for i, value in state["state"].items()}, "param_groups": groups}


def held_bytes(model: torch.nn.Module, optimizer) -> int:
    """Bytes of parameters, gradients and optimizer state this process holds: what FSDP
    divides among the processes (only its shard of each, for a sharded tensor)."""
    def size(t) -> int:
        local = t.to_local() if hasattr(t, "to_local") else t
        return local.numel() * local.element_size()

    tensors = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None)]
    inner = getattr(optimizer, "inner", optimizer)  # Lookahead wraps the optimizer
    tensors += [v for state in inner.state.values() for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(size(t) for t in tensors)
