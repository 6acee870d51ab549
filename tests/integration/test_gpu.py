"""GPU runs: CUDA training with bf16 autocast, fused AdamW, flash attention, torch.compile
and the KV cache. Skipped without a GPU (CI never has one)."""

from __future__ import annotations

import json

import pytest
import torch

from fundamentallm.config import ModelConfig, OptimConfig
from fundamentallm.generation import SamplingOptions, generate
from fundamentallm.model import GPT
from fundamentallm.training.compilation import resolve_compile
from fundamentallm.training.optim import build_optimizer
from integration_helpers import losses, run_cli, tiny_args, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_mixed_precision_run_trains_and_evaluates(tmp_path, text_file, capsys):
    out = tmp_path / "run"
    args = tiny_args(device="cuda", max_steps=20)
    assert run_cli("train", text_file, "-o", out, *args, "--mixed-precision", "--quiet") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"].startswith("cuda")
    assert summary["precision"] in ("bf16", "fp16")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    capsys.readouterr()
    assert run_cli("evaluate", out / "final.pt", "--data", text_file, "--device", "cuda", "--json") == 0
    score = json.loads(capsys.readouterr().out)
    assert 0 < score["loss"] < metrics[0]["train_loss"]  # learned something, scored on the GPU


CUDA = torch.device("cuda")
SHAPE = ModelConfig(model_dim=64, num_layers=2, num_heads=2, context_length=32, vocab_size=50)


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_cuda_step_uses_fused_adamw_bf16_newton_schulz_and_flash_attention(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = GPT(SHAPE).to(CUDA)
    optimizer = build_optimizer(model, OptimConfig(optimizer=name, learning_rate=1e-3), CUDA)
    if name == "adamw":
        assert optimizer.defaults["fused"] is True
    else:
        assert optimizer.fused is True and optimizer.ns_dtype == torch.bfloat16
    x = torch.randint(0, 50, (4, 32), device=CUDA)
    found = []
    for _ in range(5):
        # Only the flash kernel is allowed: attention raises if it cannot use it.
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        found.append(loss.item())
    assert found[-1] < found[0]  # the steps learned the batch


@pytest.mark.skipif(not resolve_compile(True, CUDA).enabled, reason="torch.compile needs Triton")
def test_cuda_compiled_and_eager_training_give_the_same_losses(tmp_path, text_file):
    recipe = dict(device="cuda", max_steps=4, log_interval=1, val_split=0, warmup_steps=0,
                  lr_schedule="constant")
    eager = losses(train(text_file, tmp_path / "eager", compile=False, **recipe))
    compiled = losses(train(text_file, tmp_path / "compiled", compile=True, **recipe))
    for step in eager:
        assert compiled[step] == pytest.approx(eager[step], rel=2e-3), step


def test_cuda_cached_and_uncached_generation_give_the_same_tokens():
    torch.manual_seed(0)
    model = GPT(SHAPE).to(CUDA).eval()
    tokens = {}
    for use_cache in (True, False):
        options = SamplingOptions(max_tokens=20, temperature=0, num_samples=2, use_cache=use_cache)
        tokens[use_cache] = torch.stack([t for t, *_ in generate(model, [1, 2, 3], options)], dim=1)
    assert torch.equal(tokens[True], tokens[False])


def test_doc_mask_uses_flex_attention_and_agrees_with_the_dense_mask(tmp_path):
    """On CUDA --doc-mask attends through a FlexAttention block mask: the same logits and
    gradients as the dense mask (the CPU's path), and a compiled --doc-mask run trains."""
    import dataclasses

    from fundamentallm.model import transformer
    from fundamentallm.model.documents import DocumentMasked

    torch.manual_seed(0)
    model = GPT(dataclasses.replace(SHAPE, zero_init=False)).to(CUDA)
    x = torch.randint(0, 49, (2, 32), device=CUDA)
    x[:, [5, 17, 18]] = 49  # ends of documents, one of them empty
    masked = DocumentMasked(model, 49)
    assert isinstance(transformer.document_mask(torch.zeros(2, 32, dtype=torch.long, device=CUDA)),
                      transformer.BlockMask)
    flex = masked(x, x.roll(-1, 1), reduction="sum")
    flex.backward()
    flex_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    dense_mask = transformer.document_mask
    try:  # the dense path, forced
        transformer.document_mask = lambda documents: dense_mask(documents.cpu()).to(documents.device)
        dense = masked(x, x.roll(-1, 1), reduction="sum")
        dense.backward()
    finally:
        transformer.document_mask = dense_mask
    assert flex.item() == pytest.approx(dense.item(), rel=1e-4)
    for a, p in zip(flex_grads, model.parameters()):
        torch.testing.assert_close(a, p.grad, rtol=1e-3, atol=1e-4)
    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"text": "To be, or not to be " * (i % 5 + 1)}) + "\n" for i in range(400)))
    out = train(records, tmp_path / "run", device="cuda", compile=True, doc_mask=True, max_steps=20, log_interval=1)
    assert losses(out)[20] < losses(out)[1]
