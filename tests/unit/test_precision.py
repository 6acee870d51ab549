"""What --precision resolves to on each kind of hardware, and that bf16 autocast keeps the
loss close to fp32."""

from __future__ import annotations

import contextlib

import pytest
import torch

from fundamentallm.errors import UserError
from fundamentallm.model import transformer
from fundamentallm.training import precision
from fundamentallm.training.precision import Precision, resolve_device, resolve_precision

CPU = torch.device("cpu")


def test_fp32_is_plain_fp32():
    p = resolve_precision("fp32", CPU)
    assert p.dtype is None and p.name == "fp32"
    assert not p.needs_scaler
    assert isinstance(p.autocast(), contextlib.nullcontext)


def test_auto_on_a_cpu_with_fast_native_bf16_is_bf16():
    p = resolve_precision("auto", CPU, cpu_bf16=True)
    assert p.dtype == torch.bfloat16 and p.name == "bf16" and not p.needs_scaler
    assert "auto: native CPU bf16" in p.note


def test_auto_on_a_cpu_without_native_bf16_is_fp32_and_says_why():
    p = resolve_precision("auto", CPU, cpu_bf16=False)
    assert p.dtype is None and "no native bf16" in p.note


def test_auto_on_a_cpu_whose_bf16_measures_slow_is_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_bf16_speedup", lambda: 0.9)
    p = resolve_precision("auto", CPU)
    assert p.dtype is None and "measured 0.90x" in p.note


@pytest.mark.parametrize("bf16_gflops, probed_sizes", [
    ({128: 2.0, 512: 2.0}, [128]),  # emulated: the quick look settles it, no full-size probe
    ({128: 150.0, 512: 400.0}, [128, 512]),  # a real bf16 unit: measured at the full size
])
def test_the_bf16_probe_stops_at_a_quick_look_where_bf16_is_emulated(monkeypatch, bf16_gflops, probed_sizes):
    sizes = []

    def gflops(dtype, size=512, repeats=8):
        sizes.append(size)
        return bf16_gflops[size] if dtype == torch.bfloat16 else 200.0

    monkeypatch.setattr(precision, "matmul_gflops", gflops)
    precision.cpu_bf16_speedup.cache_clear()
    try:
        speedup = precision.cpu_bf16_speedup()
    finally:
        precision.cpu_bf16_speedup.cache_clear()
    assert sorted(set(sizes)) == probed_sizes
    assert speedup == bf16_gflops[probed_sizes[-1]] / 200.0


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, None)])
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it(monkeypatch, bf16, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    p = resolve_precision("auto", torch.device("cuda"))
    assert p.dtype == dtype and p.device_type == "cuda"
    assert ("this GPU has bf16" if bf16 else "--precision fp16") in p.note


def test_auto_on_mps_is_bf16():
    assert resolve_precision("auto", torch.device("mps")).dtype == torch.bfloat16


def test_explicit_bf16_is_obeyed_and_warns_where_slow():
    p = resolve_precision("bf16", CPU, cpu_bf16=False)
    assert p.dtype == torch.bfloat16 and "expect it slower" in p.note
    assert "slower" not in resolve_precision("bf16", CPU, cpu_bf16=True).note


def test_bf16_on_a_gpu_without_it_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(UserError, match="--precision bf16"):
        resolve_precision("bf16", torch.device("cuda"))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_fp16_uses_a_grad_scaler(device):
    p = resolve_precision("fp16", torch.device(device))
    assert p.dtype == torch.float16 and p.needs_scaler
    assert ("expect it slower" in p.note) is (device == "cpu")


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
        with resolve_precision("bf16", CPU, cpu_bf16=True).autocast():
            logits = tiny_model(idx)
            bf16 = tiny_model(idx, targets).item()
    assert logits.dtype == torch.bfloat16  # autocast really ran the matmuls in bf16
    assert abs(bf16 - fp32) < 0.05


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize(("T", "S"), [(7, 7), (1, 9), (4, 4)])
def test_written_out_attention_matches_sdpa(grouped, T, S):
    """The bf16-on-CPU attention computes what scaled_dot_product_attention does, causal
    and not (a single query against a cache), with grouped key/value heads, and its
    gradients too."""
    g = torch.Generator().manual_seed(0)
    kv = 2 if grouped else 4
    q = torch.randn(2, 4, T, 8, generator=g, requires_grad=True)
    k = torch.randn(2, kv, S, 8, generator=g, requires_grad=True)
    v = torch.randn(2, kv, S, 8, generator=g, requires_grad=True)
    causal = T > 1
    mine = transformer.written_out_attention(q, k, v, causal, 0.0, grouped)
    (mine_grads := torch.autograd.grad(mine.square().sum(), (q, k, v)))
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=grouped)
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(mine_grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_attention_in_bf16_on_a_cpu_is_the_written_out_form(monkeypatch):
    calls = []
    monkeypatch.setattr(transformer, "written_out_attention", lambda *a: calls.append(a[0].dtype) or a[0])
    q = torch.randn(1, 2, 3, 4)
    transformer.attend(q, q, q, True, 0.0, False)
    assert calls == []  # fp32: the fused kernel
    transformer.attend(q.bfloat16(), q.bfloat16(), q.bfloat16(), True, 0.0, False)
    assert calls == [torch.bfloat16]
