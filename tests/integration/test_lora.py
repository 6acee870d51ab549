"""LoRA fine-tuning through the real CLI: only the adapters train and are saved, the
checkpoint names its base and refuses a changed one, resume is exact, and `export
--merge-lora` writes a plain model that computes the adapted one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import load_model, seal
from fundamentallm.model.lora import is_adapter
from integration_helpers import assert_one_line_error, run_cli, run_process, sample_text, train

LORA = ("--lora-rank", "4")


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> tuple[Path, Path]:
    """(base text, fine-tuning text): two different parts of the sample."""
    root = tmp_path_factory.mktemp("lora")
    text = sample_text(20_000)
    (root / "base.txt").write_text(text[:12_000], encoding="utf-8")
    (root / "tune.txt").write_text(text[12_000:], encoding="utf-8")
    return root / "base.txt", root / "tune.txt"


@pytest.fixture(scope="module")
def base(texts, tmp_path_factory) -> Path:
    return train(texts[0], tmp_path_factory.mktemp("base") / "run", max_steps=8) / "final.pt"


def test_only_adapters_train_and_the_checkpoint_holds_them_and_names_its_base(texts, base, tmp_path):
    run = train(texts[1], tmp_path / "lora", "--init-from", str(base), *LORA, max_steps=6)
    saved = torch.load(run / "final.pt", weights_only=True)
    assert saved["model"] and all(is_adapter(k) for k in saved["model"])
    assert saved["lora_base"]["path"] == str(base.resolve())
    assert (run / "final.pt").stat().st_size < base.stat().st_size
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["trained_parameters"] < summary["parameters"] / 5
    adapted, _, _ = load_model(run / "final.pt")
    original, _, _ = load_model(base)
    frozen = original.state_dict()
    assert all(torch.equal(v, frozen[k]) for k, v in adapted.state_dict().items() if not is_adapter(k))
    assert any(v.abs().sum() > 0 for k, v in adapted.state_dict().items() if k.endswith("lora_b"))  # it learnt
    assert run_cli("evaluate", run / "final.pt", "--data", texts[1]) == 0


def test_resume_is_exact(texts, base, tmp_path):
    whole = train(texts[1], tmp_path / "whole", "--init-from", str(base), *LORA, max_steps=6)
    halves = train(texts[1], tmp_path / "halves", "--init-from", str(base), *LORA, max_steps=3)
    assert run_cli("train", texts[1], "--output-dir", halves, "--resume", "--max-steps", "6", "--quiet") == 0
    first, second = (torch.load(r / "final.pt", weights_only=True)["model"] for r in (whole, halves))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_a_changed_or_missing_base_is_one_line(texts, base, tmp_path):
    copy = tmp_path / "base.pt"
    shutil.copy(base, copy)
    run = train(texts[1], tmp_path / "lora", "--init-from", str(copy), *LORA, max_steps=2)
    train(texts[0], tmp_path / "other", max_steps=2, seed=5)
    shutil.copy(tmp_path / "other" / "final.pt", copy)  # another model where the base was
    assert_one_line_error(run_process("evaluate", run / "final.pt", "--data", texts[1]), "which has changed since")
    copy.unlink()
    assert_one_line_error(run_process("generate", run / "final.pt"), "which cannot be read")


def test_merged_export_computes_the_adapted_model(texts, base, tmp_path):
    transformers = pytest.importorskip("transformers")
    run = train(texts[1], tmp_path / "lora", "--init-from", str(base), *LORA, max_steps=2)
    ckpt = torch.load(run / "final.pt", weights_only=True)
    torch.manual_seed(0)
    for name in ckpt["model"]:  # adapters well away from the start, so the merge has work to do
        ckpt["model"][name] = torch.randn_like(ckpt["model"][name]) * 0.2
    seal(ckpt)
    torch.save(ckpt, run / "final.pt")
    assert_one_line_error(run_process("export", run / "final.pt", tmp_path / "hf"), "export --merge-lora")
    assert_one_line_error(run_process("export", base, tmp_path / "hf", "--merge-lora"), "holds no LoRA adapters")
    assert run_cli("export", run / "final.pt", tmp_path / "hf", "--merge-lora") == 0
    adapted, tokenizer, _ = load_model(run / "final.pt")
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([tokenizer.encode(texts[1].read_text()[:16])])  # (1, context)
    with torch.no_grad():
        ours, theirs = adapted(ids), exported(ids).logits
    assert (ours - theirs).abs().max() < 1e-5
    assert (ours - load_model(base)[0](ids)).abs().max() > 1e-2  # the adapters do change the model
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "LoRA rank 4" in card and "--lora-rank 4" in card
    assert run_cli("export", run / "final.pt", tmp_path / "m.gguf", "--merge-lora", "--outtype", "f32") == 0


def test_fine_tuning_from_a_lora_checkpoint_starts_from_the_merged_model(texts, base, tmp_path):
    run = train(texts[1], tmp_path / "lora", "--init-from", str(base), *LORA, max_steps=2)
    again = train(texts[1], tmp_path / "full", "--init-from", str(run / "final.pt"), max_steps=1, learning_rate=1e-9)
    full = torch.load(again / "final.pt", weights_only=True)
    assert "lora_base" not in full and not any(is_adapter(k) for k in full["model"])


def test_settings_that_cannot_act_are_one_line(texts, base, tmp_path):
    for extra, fragment in (
        (LORA, "--lora-rank adapts a trained model"),
        (("--lora-alpha", "8"), "--lora-alpha applies only with --lora-rank"),
        (("--init-from", str(base), *LORA, "--lora-targets", "head"), "--lora-targets head: choose from"),
        (("--init-from", str(base), *LORA, "--dropconnect", "0.1"), "--dropconnect"),
    ):
        assert_one_line_error(run_process("train", texts[1], "--output-dir", tmp_path / "x", "--max-steps", "1",
                                          *extra), fragment)


def test_an_imported_model_directory_is_a_base_too(texts, base, tmp_path):
    pytest.importorskip("safetensors")
    assert run_cli("export", base, tmp_path / "hf") == 0  # a Qwen3 directory, as a downloaded model is
    run = train(texts[1], tmp_path / "lora", "--init-from", str(tmp_path / "hf"), *LORA, "--lora-targets", "qkv",
                max_steps=2)
    saved = torch.load(run / "final.pt", weights_only=True)
    assert saved["lora_base"]["path"] == str((tmp_path / "hf").resolve())
    assert {k.split(".")[-2] for k in saved["model"]} == {"qkv"}
    assert run_cli("generate", run / "final.pt", "--max-tokens", "5") == 0
