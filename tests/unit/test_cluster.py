"""The single-process Cluster: every collective is the identity, so one loop serves both."""

from __future__ import annotations

import pytest
import torch

from fundamentallm.errors import UserError
from fundamentallm.training.distributed import Cluster, join_cluster


def test_without_torchrun_there_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cluster = join_cluster(torch.device("cpu"))
    assert (cluster.rank, cluster.world_size, cluster.main, cluster.distributed) == (0, 1, True, False)


def test_single_process_collectives_are_identities():
    cluster = Cluster()
    value = torch.tensor(2.5)
    assert cluster.mean(value) is value
    assert cluster.agree("max_time") == "max_time"
    assert cluster.gather({"a": 1}) == [{"a": 1}]
    cluster.barrier()
    with cluster.main_first():
        pass
    assert cluster.on_main(lambda: 7) == 7


def test_on_main_passes_user_errors_on():
    def refuse():
        raise UserError("runs/x already holds a run")

    with pytest.raises(UserError, match="already holds a run"):
        Cluster().on_main(refuse)


def test_other_devices_cannot_join(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UserError, match="CPUs or CUDA GPUs, not mps"):
        join_cluster(torch.device("mps"))
