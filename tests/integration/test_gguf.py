"""GGUF exports read back with the `gguf` package (llama.cpp's own reader): the metadata
llama.cpp sizes the model by, every tensor (exact in f32, within the type's precision in f16
and q8_0), and the tokenizer, run as llama.cpp runs it (GPT-2's pre-tokenizer, merges by
rank, whole symbols looked up), giving our ids for each tokenizer kind. llama.cpp itself
loads these files in benchmarks/gguf.py (it must be compiled: too slow for the suite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fundamentallm
from fundamentallm.checkpoint import load_model, seal
from fundamentallm.errors import UserError
from fundamentallm.cli.options import GGUF_OUTTYPES
from fundamentallm.interop.gguf_export import OUTTYPES, character_merges, llama_rope_layout, pre_tokenizer_name
from fundamentallm.tokenizers import EOS
from fundamentallm.tokenizers.base import END_OF_TURN
from integration_helpers import assert_one_line_error, exportable_checkpoint, run_cli, run_process, sample_text

gguf = pytest.importorskip("gguf")
from tokenizers import pre_tokenizers  # noqa: E402

# Non-ASCII characters of two and three bytes, so the char tokenizer needs its merges.
TEXT = sample_text(3000) + "\nCafé déjà vu — “naïve” señor’s œuvre.\n"


def build(tmp_path: Path, kind: str, **model: object) -> Path:
    return exportable_checkpoint(tmp_path, TEXT, kind, **{"model_dim": 64, **model})  # q8_0 blocks: rows of 32


def read(path: Path) -> tuple[dict, dict]:
    """(metadata: key -> value, tensors: name -> ReaderTensor)."""
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    return fields, {t.name: t for t in reader.tensors}


def llama_cpp_tokenize(text: str, tokens: list[str], merges: list[str]) -> list[int]:
    """llama.cpp's BPE: GPT-2's regex words in byte characters, merges applied lowest rank
    first, each final symbol looked up whole (or else byte by byte)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
    ids = []
    for word, _ in pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True).pre_tokenize_str(text):
        symbols = list(word)
        while True:
            pairs = [(ranks[(a, b)], i) for i, (a, b) in enumerate(zip(symbols, symbols[1:])) if (a, b) in ranks]
            if not pairs:
                break
            _, i = min(pairs)
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        for s in symbols:
            ids += [vocab[s]] if s in vocab else [vocab[c] for c in s if c in vocab]
    return ids


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_f32_file_holds_our_model_and_tokenizer(tmp_path, kind):
    checkpoint = build(tmp_path, kind)
    assert run_cli("export", checkpoint, tmp_path / "out" / "model.gguf", "--outtype", "f32") == 0
    fields, tensors = read(tmp_path / "out" / "model.gguf")
    model, tokenizer, cfg = load_model(checkpoint)
    m = cfg.model
    assert fields["general.architecture"] == "qwen3"
    assert (fields["qwen3.block_count"], fields["qwen3.embedding_length"], fields["qwen3.context_length"],
            fields["qwen3.attention.head_count"]) == (m.num_layers, m.model_dim, m.context_length, m.num_heads)
    assert fields["qwen3.rope.freq_base"] == m.rope_theta
    assert (fields["tokenizer.ggml.model"], fields["tokenizer.ggml.pre"]) == ("gpt2", "gpt-2")
    assert len(fields["tokenizer.ggml.tokens"]) == tokenizer.vocab_size
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.special_id(EOS)
    assert fields["tokenizer.ggml.add_bos_token"] is False
    # A model of one running text never writes the end-of-text token, nor a turn token.
    assert tokenizer.special_id(EOS) in fields["tokenizer.ggml.suppress_tokens"]

    weights = model.state_dict()
    assert np.array_equal(tensors["token_embd.weight"].data, weights["embed.weight"].numpy())
    q_rows = weights["blocks.0.attn.qkv.weight"][: m.model_dim]
    assert np.array_equal(tensors["blk.0.attn_q.weight"].data, q_rows.numpy())
    assert np.array_equal(tensors["blk.1.attn_k_norm.weight"].data, weights["blocks.1.attn.k_norm.weight"].numpy())
    assert np.array_equal(tensors["output.weight"].data, weights["head.weight"].numpy())  # untied: its own head
    assert len(tensors) == 1 + 1 + 1 + m.num_layers * 11  # norm, q, k, v, o, q_norm, k_norm, norm, gate, up, down

    # Special token texts are control tokens: llama.cpp reads them only when asked to.
    types = fields["tokenizer.ggml.token_type"]
    assert types[tokenizer.special_id(END_OF_TURN)] == gguf.TokenType.CONTROL
    sample = TEXT[-400:]
    assert llama_cpp_tokenize(sample, fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.merges"]) == \
        tokenizer.encode(sample)


def test_llama_layout_rotates_pairs_as_ours_rotates_halves():
    """llama.cpp rotates channels (2i, 2i+1) of each head; we rotate (i, i + D/2). The
    exported rows, rotated llama.cpp's way, are our rotated rows in the exported order."""
    heads, head_dim, width = 2, 8, 5
    torch.manual_seed(0)
    weight, x = torch.randn(heads * head_dim, width), torch.randn(width)
    angles = torch.rand(head_dim // 2) * 3

    def rotate_halves(q):  # (H, D): ours
        a, b = q[:, : head_dim // 2], q[:, head_dim // 2:]
        return torch.cat([a * angles.cos() - b * angles.sin(), b * angles.cos() + a * angles.sin()], dim=1)

    def rotate_pairs(q):  # (H, D): llama.cpp's NORM rope
        a, b = q[:, 0::2], q[:, 1::2]
        out = torch.empty_like(q)
        out[:, 0::2], out[:, 1::2] = a * angles.cos() - b * angles.sin(), b * angles.cos() + a * angles.sin()
        return out

    ours = rotate_halves((weight @ x).reshape(heads, head_dim))
    theirs = rotate_pairs((llama_rope_layout(weight, heads) @ x).reshape(heads, head_dim))
    order = llama_rope_layout(torch.arange(heads * head_dim).float()[:, None], heads)[:, 0].long()
    assert torch.allclose(theirs.reshape(-1), ours.reshape(-1)[order], atol=1e-6)


def test_llama_model_exports_permuted_q_and_k_and_a_tied_head_once(tmp_path):
    checkpoint = build(tmp_path, "char", qk_norm=False, num_kv_heads=1, tie_embeddings=True)
    assert run_cli("export", checkpoint, tmp_path / "llama.gguf", "--outtype", "f32") == 0
    fields, tensors = read(tmp_path / "llama.gguf")
    model, _, cfg = load_model(checkpoint)
    assert fields["general.architecture"] == "llama"
    assert fields["llama.attention.head_count_kv"] == 1
    qkv = model.state_dict()["blocks.0.attn.qkv.weight"]
    head_dim = cfg.model.model_dim // cfg.model.num_heads
    k_rows = qkv[cfg.model.model_dim: cfg.model.model_dim + head_dim]
    assert np.array_equal(tensors["blk.0.attn_k.weight"].data, llama_rope_layout(k_rows, 1).numpy())
    assert "output.weight" not in tensors  # tied: llama.cpp uses token_embd for both ends


def test_f16_and_q8_0_quantize_matrices_and_keep_norms(tmp_path):
    checkpoint = build(tmp_path, "byte")
    weights = load_model(checkpoint)[0].state_dict()
    sizes = {}
    for outtype in ("f16", "q8_0"):
        path = tmp_path / outtype / "model.gguf"
        assert run_cli("export", checkpoint, path, "--outtype", outtype) == 0
        sizes[outtype] = path.stat().st_size
        _, tensors = read(path)
        embed = tensors["token_embd.weight"]
        assert embed.tensor_type == getattr(gguf.GGMLQuantizationType, outtype.upper())
        assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
        restored = gguf.quants.dequantize(embed.data, embed.tensor_type).reshape(weights["embed.weight"].shape)
        scale = weights["embed.weight"].abs().max().item()
        tolerance = 1e-3 if outtype == "f16" else 1e-2  # q8_0: 8 bits per weight, one scale per 32
        assert np.abs(restored - weights["embed.weight"].numpy()).max() <= tolerance * scale
    assert sizes["q8_0"] < sizes["f16"]


def test_chat_model_gets_its_template_and_stops_in_the_modelfile(tmp_path):
    checkpoint = build(tmp_path, "char")
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["data"]["format"] = "chat"
    seal(ckpt)  # re-sealed after the edit
    torch.save(ckpt, checkpoint)
    assert run_cli("export", checkpoint, tmp_path / "chat" / "model.gguf") == 0
    fields, tensors = read(tmp_path / "chat" / "model.gguf")
    tokenizer = load_model(checkpoint)[1]
    assert fields["tokenizer.ggml.eot_token_id"] == tokenizer.special_id(END_OF_TURN)
    assert "<|assistant|>" in fields["tokenizer.chat_template"]
    assert tensors["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16  # the default outtype
    modelfile = (tmp_path / "chat" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf\n")
    assert '<|{{ .Role }}|>{{ .Content }}<|end|>' in modelfile and 'PARAMETER stop "<|end|>"' in modelfile
    card = (tmp_path / "chat" / "README.md").read_text()
    assert "library_name: gguf" in card and "ollama create model -f Modelfile" in card


def test_plain_modelfile_and_refusals(tmp_path):
    checkpoint = build(tmp_path, "char")
    out = tmp_path / "plain" / "m.gguf"
    assert run_cli("export", checkpoint, out) == 0
    modelfile = (tmp_path / "plain" / "Modelfile").read_text()
    assert 'TEMPLATE """{{ .Prompt }}"""' in modelfile and "PARAMETER stop" not in modelfile
    # Nothing beside the file is replaced without --overwrite: one line, and exit status 2.
    assert_one_line_error(run_process("export", checkpoint, out), "m.gguf exists (--overwrite replaces it")
    (tmp_path / "plain" / "m.gguf").unlink()
    assert_one_line_error(run_process("export", checkpoint, out), "Modelfile exists")
    assert run_cli("export", checkpoint, out, "--overwrite", "--outtype", "q8_0") == 0
    assert_one_line_error(run_process("export", checkpoint, tmp_path / "d", "--outtype", "f16"),
                          "--outtype is for a GGUF export")
    assert_one_line_error(run_process("export", checkpoint, tmp_path / "x.gguf", "--dtype", "bf16"),
                          "--dtype is for a model directory")
    with pytest.raises(UserError, match="--outtype 'q4_0': choose one of f32, f16, q8_0"):
        fundamentallm.load(checkpoint).export(tmp_path / "api.gguf", outtype="q4_0")
    (tmp_path / "g").mkdir()
    gpt2 = build(tmp_path / "g", "char", activation="gelu", norm="layernorm", position="learned", qk_norm=False)
    assert_one_line_error(run_process("export", gpt2, tmp_path / "g.gguf"), "need RMSNorm, RoPE and SwiGLU")


def test_character_merges_build_multibyte_characters_only():
    merges = character_merges("aé—")
    assert merges == ["Ã ©", "â Ģ", "âĢ Ķ"]  # é = C3 A9; — = E2 80 94, in GPT-2's byte characters
    assert character_merges("abc") == []


def test_pre_tokenizer_names():
    assert pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    # Qwen2/3's, as their tokenizer.json holds it (llama.cpp's `qwen2`)
    qwen = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
            r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    assert pre_tokenizer_name({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": qwen}}, {"type": "ByteLevel", "use_regex": False}]}) == "qwen2"
    with pytest.raises(UserError, match="pre-tokenizer llama.cpp knows"):
        pre_tokenizer_name({"type": "Metaspace"})


def test_the_command_line_offers_the_exports_types():
    assert GGUF_OUTTYPES == OUTTYPES
