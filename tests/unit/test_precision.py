"""What --mixed-precision resolves to, and that bf16 autocast keeps the loss close to fp32."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fundamentallm.errors import UserError
from fundamentallm.training.precision import Precision, resolve_device, resolve_precision

CPU = torch.device("cpu")


def test_without_mixed_precision_cpu_is_fp32():
    p = resolve_precision(False, CPU)
    assert p.dtype is None and p.name == "fp32"
    assert not p.needs_scaler
    assert isinstance(p.autocast(), contextlib.nullcontext)


def test_cpu_with_native_bf16_uses_bf16_autocast():
    p = resolve_precision(True, CPU, cpu_bf16=True)
    assert p.dtype == torch.bfloat16 and p.name == "bf16"
    assert not p.needs_scaler


def test_cpu_without_native_bf16_falls_back_to_fp32_and_says_why():
    p = resolve_precision(True, CPU, cpu_bf16=False)
    assert p.dtype is None and p.name == "fp32"
    assert "native bf16" in p.note


@pytest.mark.parametrize(("dtype", "needs"), [(torch.float16, True), (torch.bfloat16, False),
                                             (None, False)])
def test_only_fp16_needs_a_grad_scaler(dtype, needs):
    assert Precision("cuda", dtype, "").needs_scaler is needs


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cuda"):
            resolve_device("cuda")


def test_bf16_autocast_loss_is_close_to_fp32(tiny_model, tiny_model_config):
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, tiny_model_config.vocab_size, (4, 16), generator=g)
    targets = torch.randint(0, tiny_model_config.vocab_size, (4, 16), generator=g)
    with torch.no_grad():
        fp32 = tiny_model(idx, targets).item()
        with resolve_precision(True, CPU, cpu_bf16=True).autocast():
            logits = tiny_model(idx)
            bf16 = tiny_model(idx, targets).item()
    assert logits.dtype == torch.bfloat16  # autocast really ran the matmuls in bf16
    assert abs(bf16 - fp32) < 0.05
