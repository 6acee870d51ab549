"""The Hugging Face mapping without transformers: which architecture a variant leaves as,
tensor layouts both ways, the round trip, and one-line refusals of what cannot be read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import load_checkpoint, load_model, save_checkpoint
from fundamentallm.config import Config
from fundamentallm.errors import UserError
from fundamentallm.interop import export_checkpoint
from fundamentallm.hf.architectures import ARCHITECTURES, architecture_for
from fundamentallm.tokenizers.byte import byte_characters
from fundamentallm.model import GPT
from fundamentallm.tokenizers import build_tokenizer
from helpers import sample_text, sharpen

pytest.importorskip("safetensors")
from safetensors.torch import load_file, save_file  # noqa: E402

# Every mapping, and the variant each is for (the defaults leave as Qwen3).
LLAMA = {"activation": "swiglu", "qk_norm": False}
QWEN3 = {}  # the defaults
GPT2 = {"activation": "gelu", "norm": "layernorm", "position": "learned", "qk_norm": False, "tie_embeddings": True}
RELU2 = {"activation": "relu2"}
MAPPINGS = {"llama": LLAMA, "qwen3": QWEN3, "gpt2": GPT2, "fundamentallm": RELU2}


def model_config(tiny_model_config, **changes):
    return dataclasses.replace(tiny_model_config, **changes)


@pytest.mark.parametrize("expected,changes", [
    ("llama", LLAMA), ("qwen3", QWEN3), ("gpt2", GPT2),
    ("llama", {**LLAMA, "num_kv_heads": 1, "tie_embeddings": False, "rope_theta": 5e5, "mlp_hidden": 40}),
    ("fundamentallm", RELU2),  # ReLU² MLPs: no standard architecture has them
    ("fundamentallm", {**LLAMA, "norm": "layernorm"}),  # LayerNorm with RoPE
    ("fundamentallm", {**GPT2, "tie_embeddings": False}),
    ("fundamentallm", {**GPT2, "num_kv_heads": 1}),
], ids=lambda v: v if isinstance(v, str) else None)
def test_each_variant_leaves_as_the_architecture_that_computes_it(tiny_model_config, expected, changes):
    assert architecture_for(model_config(tiny_model_config, **changes)).model_type == expected


@pytest.mark.parametrize("name", MAPPINGS)
@pytest.mark.parametrize("extra", [{}, {"num_kv_heads": 1, "tie_embeddings": False, "norm_gain": False}],
                         ids=["plain", "gqa-untied-nogain"])
def test_tensors_go_there_and_back_unchanged(tiny_model_config, name, extra):
    if name == "gpt2" and extra:
        pytest.skip("GPT-2 has neither grouped-query attention nor untied embeddings")
    cfg = model_config(tiny_model_config, **MAPPINGS[name], **extra)
    torch.manual_seed(0)
    model = sharpen(GPT(cfg))
    arch = ARCHITECTURES[name]
    theirs = arch.to_hf(model.state_dict(), cfg)
    # A standard architecture always has gains (ones stand for "no gain"); ours keeps the setting.
    back_cfg = cfg if name == "fundamentallm" else dataclasses.replace(cfg, norm_gain=True)
    back = arch.from_hf(theirs, back_cfg)
    restored = GPT(back_cfg)
    restored.load_state_dict({**back, **({"head.weight": back["embed.weight"]} if cfg.tie_embeddings else {})})
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.context_length))
    torch.testing.assert_close(restored(idx), model(idx), atol=0, rtol=0)
    assert set(arch.to_hf(restored.state_dict(), back_cfg)) == set(theirs)


def test_llama_names_and_shapes_are_the_transformers_ones(tiny_model_config):
    cfg = model_config(tiny_model_config, **LLAMA, num_kv_heads=1, tie_embeddings=False)
    theirs = ARCHITECTURES["llama"].to_hf(GPT(cfg).state_dict(), cfg)
    C, D = cfg.model_dim, cfg.model_dim // cfg.num_heads
    assert theirs["model.layers.0.self_attn.q_proj.weight"].shape == (C, C)
    assert theirs["model.layers.0.self_attn.k_proj.weight"].shape == (D, C)  # one key/value head
    assert theirs["model.layers.1.mlp.gate_proj.weight"].shape == (8 * C // 3, C)
    assert "lm_head.weight" in theirs and len([k for k in theirs if "layers.0." in k]) == 9


def test_gpt2_stores_matrices_transposed_with_zero_biases(tiny_model_config):
    cfg = model_config(tiny_model_config, **GPT2)
    model = GPT(cfg)
    theirs = ARCHITECTURES["gpt2"].to_hf(model.state_dict(), cfg)
    assert torch.equal(theirs["transformer.h.0.attn.c_attn.weight"], model.blocks[0].attn.qkv.weight.T)
    assert not theirs["transformer.h.1.mlp.c_fc.bias"].any()
    theirs["transformer.h.1.mlp.c_fc.bias"][3] = 0.5
    with pytest.raises(UserError, match="non-zero biases"):
        ARCHITECTURES["gpt2"].from_hf(theirs, cfg)


def test_byte_characters_are_gpt2s_byte_level_alphabet():
    from tokenizers import pre_tokenizers

    chars = byte_characters()
    assert len(set(chars)) == 256 and set(chars) == set(pre_tokenizers.ByteLevel.alphabet())
    assert chars[ord("A")] == "A" and chars[ord(" ")] == "Ġ" and chars[ord("\n")] == "Ċ"


# ---- through files: export, read back, export again ----
def saved(tmp_path: Path, tiny_model_config, kind: str = "char", **changes) -> Path:
    text = sample_text(3000)
    tokenizer = build_tokenizer(kind, text, 300 if kind == "bpe" else None)
    cfg = Config()
    cfg.model = model_config(tiny_model_config, vocab_size=tokenizer.vocab_size, **changes)
    cfg.data.tokenizer = kind
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_checkpoint(path, cfg, tokenizer, sharpen(GPT(cfg.model)))
    return path


@pytest.mark.parametrize("name", MAPPINGS)
@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_export_import_export_gives_identical_tensors(tmp_path, tiny_model_config, name, kind):
    checkpoint = saved(tmp_path, tiny_model_config, kind, **MAPPINGS[name])
    export_checkpoint(checkpoint, tmp_path / "once")
    model, tokenizer, cfg = load_model(tmp_path / "once")  # a directory reads as a checkpoint
    original, original_tokenizer, _ = load_model(checkpoint)
    assert tokenizer.to_dict() == original_tokenizer.to_dict()  # the very tokenizer, not a look-alike
    save_checkpoint(tmp_path / "imported.pt", cfg, tokenizer, model)
    export_checkpoint(tmp_path / "imported.pt", tmp_path / "twice")
    once, twice = load_file(str(tmp_path / "once/model.safetensors")), load_file(str(tmp_path / "twice/model.safetensors"))
    assert once.keys() == twice.keys() and all(torch.equal(once[k], twice[k]) for k in once)
    config = json.loads((tmp_path / "once/config.json").read_text())
    assert config["model_type"] == name
    assert ("auto_map" in config) == (name == "fundamentallm")
    assert (tmp_path / "once/modeling_fundamentallm.py").exists() == (name == "fundamentallm")


def test_bf16_export_halves_the_weights(tmp_path, tiny_model_config):
    checkpoint = saved(tmp_path, tiny_model_config, **QWEN3)
    fp32 = export_checkpoint(checkpoint, tmp_path / "fp32")
    bf16 = export_checkpoint(checkpoint, tmp_path / "bf16", "bf16")
    assert {t.dtype for t in load_file(str(tmp_path / "bf16/model.safetensors")).values()} == {torch.bfloat16}
    assert bf16.bytes < 0.55 * fp32.bytes
    assert json.loads((tmp_path / "bf16/config.json").read_text())["torch_dtype"] == "bfloat16"


def test_export_refuses_a_non_empty_directory_unless_told(tmp_path, tiny_model_config):
    checkpoint = saved(tmp_path, tiny_model_config)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="exists and is not empty"):
        export_checkpoint(checkpoint, tmp_path / "out")
    export_checkpoint(checkpoint, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "notes.txt").exists() and (tmp_path / "out" / "config.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no work directory left


# ---- what is refused, in one line ----
@pytest.fixture
def exported(tmp_path, tiny_model_config) -> Path:
    export_checkpoint(saved(tmp_path, tiny_model_config, **LLAMA), tmp_path / "hf")
    return tmp_path / "hf"


def edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("changes,fragment", [
    ({"model_type": "mistral"}, "architecture 'mistral' is not supported"),
    ({"auto_map": {"AutoModelForCausalLM": "evil.Model"}}, "asks for remote code"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}}, "RoPE scaling 'llama3'"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"attention_bias": True}, "attention_bias True is not supported"),
    ({"head_dim": 32}, "head_dim 32"),
    ({"num_key_value_heads": 3}, "--num-kv-heads 3 does not divide"),
    ({"hidden_size": None}, "lacks 'hidden_size'"),
    ({"num_hidden_layers": 3}, "the weights lack model.layers.2"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_unsupported_configs_are_one_line_errors(exported, changes, fragment):
    edit_config(exported, **changes)
    with pytest.raises(UserError, match=fragment) as error:
        load_checkpoint(exported)
    assert "\n" not in str(error.value) and "config.json" in str(error.value) or "hf" in str(error.value)


def test_unreadable_directories_are_one_line_errors(exported, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (pickled / name).write_text((exported / name).read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(UserError, match="pytorch_model.bin is a pickle, which FundamentaLLM does not open"):
        load_checkpoint(pickled)
    (exported / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    (exported / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UserError, match="malformed BPE tokenizer"):
        load_checkpoint(exported)
    (exported / "tokenizer.json").unlink()
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_checkpoint(exported)
    with pytest.raises(UserError, match="not a model directory"):
        load_checkpoint(tmp_path)


def test_corrupt_weights_are_one_line_errors(exported):
    data = (exported / "model.safetensors").read_bytes()
    (exported / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not readable safetensors"):
        load_checkpoint(exported)


def test_sharded_weights_are_read(exported):
    tensors = load_file(str(exported / "model.safetensors"))
    names = sorted(tensors)
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(exported / file))
    (exported / "model.safetensors").unlink()
    (exported / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {n: f for f, part in halves.items() for n in part}}))
    model, _, _ = load_model(exported)
    assert torch.equal(model.embed.weight, tensors["model.embed_tokens.weight"])


def test_a_missing_safetensors_names_the_extra(tmp_path, tiny_model_config, monkeypatch):
    checkpoint = saved(tmp_path, tiny_model_config)
    monkeypatch.setitem(__import__("sys").modules, "safetensors.torch", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'fundamentallm\[hf\]'"):
        export_checkpoint(checkpoint, tmp_path / "hf")


def test_the_api_key_can_come_from_the_environment(tmp_path, tiny_model_config, monkeypatch):
    import fundamentallm.server
    from fundamentallm.cli import main

    seen = {}
    monkeypatch.setattr(fundamentallm.server, "serve", lambda *args, **kwargs: seen.setdefault("args", args) and 0)
    monkeypatch.setenv("FUNDAMENTALLM_API_KEY", "from-env")
    assert main(["serve", str(saved(tmp_path, tiny_model_config)), "--host", "0.0.0.0"]) == 0
    assert seen["args"][5] == "from-env"  # (generator, checkpoint, host, port, limit, api_key, model)


def test_a_smollm_style_directory_loads(tmp_path):
    """SmolLM-135M's config.json as transformers 4.x wrote it (rope_theta at the top level,
    rope_scaling null, tied embeddings, bf16 weights, a GPT-2 style tokenizer config), at a
    tiny size: grouped-query attention 3 of 9 heads, an MLP width of its own."""
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 36,
              "intermediate_size": 100, "num_hidden_layers": 2, "num_attention_heads": 9, "num_key_value_heads": 3,
              "hidden_act": "silu", "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
              "rope_scaling": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "vocab_size": 320,
              "pretraining_tp": 1, "bos_token_id": 0, "eos_token_id": 0, "attention_bias": False,
              "is_llama_config": True, "use_cache": True, "transformers_version": "4.40.1"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    tokenizer = build_tokenizer("bpe", sample_text(3000), 300)
    (tmp_path / "tokenizer.json").write_text(tokenizer.serialized)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>", "bos_token": {"content": "<|endoftext|>"},
         "model_max_length": 2048}))
    torch.manual_seed(0)
    C, D, L = 36, 4, 2
    tensors = {"model.embed_tokens.weight": torch.randn(320, C), "model.norm.weight": torch.rand(C)}
    for i in range(L):
        h = f"model.layers.{i}."
        tensors.update({h + "self_attn.q_proj.weight": torch.randn(C, C), h + "self_attn.k_proj.weight": torch.randn(3 * D, C),
                        h + "self_attn.v_proj.weight": torch.randn(3 * D, C), h + "self_attn.o_proj.weight": torch.randn(C, C),
                        h + "mlp.gate_proj.weight": torch.randn(100, C), h + "mlp.up_proj.weight": torch.randn(100, C),
                        h + "mlp.down_proj.weight": torch.randn(C, 100), h + "input_layernorm.weight": torch.rand(C),
                        h + "post_attention_layernorm.weight": torch.rand(C)})
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, str(tmp_path / "model.safetensors"))
    model, loaded, cfg = load_model(tmp_path)
    m = cfg.model
    assert (m.num_heads, m.num_kv_heads, m.mlp_hidden, m.norm_eps, m.context_length, m.tie_embeddings) == \
        (9, 3, 100, 1e-5, 2048, True)
    assert model.head.weight is model.embed.weight and model.embed.weight.dtype == torch.float32
    assert loaded.special == {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    assert model(torch.tensor([loaded.encode("To be, or not to be")])).shape[-1] == 320
