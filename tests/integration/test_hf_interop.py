"""Models that leave and enter, checked by `transformers` itself: for every architecture
mapping and every tokenizer, an exported model loads with AutoModelForCausalLM and
AutoTokenizer and computes our function (logits, the evaluate loss, greedy text); tiny
random Llama and Qwen3 models that `transformers` builds come in through `import` and
`train --init-from`."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import load_model
from integration_helpers import (
    TINY_SHAPE, assert_one_line_error, exportable_checkpoint, run_cli, run_process, sample_text, train,
)

transformers = pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

MAPPINGS = {
    "qwen3": {},  # the defaults
    "llama": {"qk_norm": False, "num_kv_heads": 1, "tie_embeddings": False},
    "gpt2": {"activation": "gelu", "norm": "layernorm", "position": "learned", "qk_norm": False,
             "tie_embeddings": True},
    "fundamentallm": {"activation": "relu2"},  # no standard architecture: our own modelling code
}
CONTEXT = TINY_SHAPE["context_length"]


@pytest.fixture(scope="module")
def text() -> str:
    return sample_text(4000)


def build(tmp_path: Path, text: str, name: str, kind: str) -> Path:
    return exportable_checkpoint(tmp_path, text, kind, **MAPPINGS[name])


def load_hf(directory: Path, remote: bool):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=remote).eval()
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=remote)
    return model, tokenizer


def transformers_loss(model, ids: list[int], unk_id: int | None) -> float:
    """Mean nats per target over non-overlapping windows, from transformers' logits."""
    nats, scored = 0.0, 0
    for start in range(0, len(ids) - 1, CONTEXT):
        x = torch.tensor([ids[start:start + CONTEXT]])
        y = torch.tensor([ids[start + 1:start + 1 + x.shape[1]]])
        x = x[:, :y.shape[1]]
        if unk_id is not None:
            y[y == unk_id] = -100
        with torch.no_grad():
            logits = model(x).logits
        nats += float(torch.nn.functional.cross_entropy(logits[0].float(), y[0], reduction="sum", ignore_index=-100))
        scored += int((y != -100).sum())
    return nats / scored


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
@pytest.mark.parametrize("name", MAPPINGS)
def test_transformers_computes_our_model(tmp_path, text, capsys, name, kind):
    checkpoint = build(tmp_path, text, name, kind)
    assert run_cli("export", checkpoint, tmp_path / "hf") == 0
    said = capsys.readouterr().out
    remote = name == "fundamentallm"
    assert ("trust_remote_code=True" in said) == remote
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["model_type"] == name
    theirs, their_tokenizer = load_hf(tmp_path / "hf", remote)
    ours, our_tokenizer, _ = load_model(checkpoint)

    # the same ids for the same text, and the same text back
    sample = text[1000:1600] + " Ω"
    ids = our_tokenizer.encode(sample)
    assert their_tokenizer(sample)["input_ids"] == ids
    assert their_tokenizer.decode(ids[:-2]) == our_tokenizer.decode(ids[:-2])

    # logits on a batch of windows, in fp32
    windows = torch.tensor([ids[i:i + CONTEXT] for i in range(0, 4 * CONTEXT, CONTEXT)])  # (4, T)
    with torch.no_grad():
        difference = (theirs(windows).logits - ours(windows)).abs().max().item()
    assert difference <= 1e-4

    # the loss over a text: ours from `evaluate`, theirs from their logits
    (tmp_path / "val.txt").write_text(sample, encoding="utf-8")
    assert run_cli("evaluate", checkpoint, tmp_path / "val.txt", "--json", "--precision", "fp32") == 0
    ours_loss = json.loads(capsys.readouterr().out)["loss"]
    assert transformers_loss(theirs, ids, our_tokenizer.unk_id) == pytest.approx(ours_loss, abs=1e-5)

    # greedy text, token for token (within the context: beyond it our generation slides
    # its window, which transformers does not)
    prompt = "First"
    assert run_cli("generate", checkpoint, "--prompt", prompt, "--greedy", "--max-tokens", "10", "--json") == 0
    ours_text = json.loads(capsys.readouterr().out)["samples"][0]["text"]
    prompt_ids = torch.tensor([our_tokenizer.encode(prompt)])
    with torch.no_grad():
        out = theirs.generate(prompt_ids, do_sample=False, max_new_tokens=10)
    new = out[0, prompt_ids.shape[1]:].tolist()
    # (a character the tenth token leaves incomplete is left out of ours: theirs shows U+FFFD)
    assert len(new) == 10 and their_tokenizer.decode(new).rstrip("\ufffd") == ours_text.rstrip("\ufffd")
    assert our_tokenizer.decode(new).rstrip("\ufffd") == ours_text.rstrip("\ufffd")


def test_bf16_export_loads_and_stays_close(tmp_path, text, capsys):
    checkpoint = build(tmp_path, text, "qwen3", "char")
    assert run_cli("export", checkpoint, tmp_path / "hf", "--dtype", "bf16") == 0
    theirs, _ = load_hf(tmp_path / "hf", False)
    assert theirs.dtype == torch.bfloat16
    ours, tokenizer, _ = load_model(checkpoint)
    x = torch.tensor([tokenizer.encode(text[:CONTEXT])])
    with torch.no_grad():
        assert torch.allclose(theirs(x).logits.float().softmax(-1), ours(x).softmax(-1), atol=0.05)


# ---- the way in: models that transformers builds ----
def hub_like(tmp_path: Path, text: str, architecture: str) -> tuple[Path, torch.nn.Module]:
    """A tiny random model of a public architecture, saved as a downloaded one would be:
    grouped-query attention (4 query heads, 2 key/value heads), untied embeddings, a RoPE
    base and an MLP width of its own, and a byte-level BPE tokenizer with an EOS token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    pipeline = Tokenizer(models.BPE())
    pipeline.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    pipeline.decoder = decoders.ByteLevel()
    pipeline.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=pipeline, eos_token="<|endoftext|>")
    shape = dict(vocab_size=320, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                 max_position_embeddings=64, rms_norm_eps=1e-5,
                 rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    classes = {"llama": (LlamaConfig, LlamaForCausalLM, {}),
               "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 8})}
    config_class, model_class, extra = classes[architecture]
    torch.manual_seed(0)
    model = model_class(config_class(**shape, **extra)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    directory = tmp_path / architecture
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    return directory, model


@pytest.mark.parametrize("architecture", ["llama", "qwen3"])
def test_a_downloaded_model_imports_and_round_trips(tmp_path, text, capsys, architecture):
    directory, theirs = hub_like(tmp_path, text, architecture)
    assert run_cli("import", directory, tmp_path / "imported.pt") == 0
    assert "tokenizer bpe" in capsys.readouterr().out
    ours, tokenizer, cfg = load_model(tmp_path / "imported.pt")
    assert (cfg.model.num_kv_heads, cfg.model.tie_embeddings, cfg.model.rope_theta, cfg.model.mlp_hidden,
            cfg.model.norm_eps, cfg.model.qk_norm) == (2, False, 500.0, 80, 1e-5, architecture == "qwen3")
    assert tokenizer.special == {"eos_token": "<|endoftext|>"}
    ids = tokenizer.encode(text[:400])
    x = torch.tensor([ids[:32], ids[32:64]])
    with torch.no_grad():
        assert (ours(x) - theirs(x).logits).abs().max().item() <= 1e-4
    # export → import → export: identical tensors, and the same config where it matters
    assert run_cli("export", tmp_path / "imported.pt", tmp_path / "again") == 0
    from safetensors.torch import load_file

    original, again = load_file(str(directory / "model.safetensors")), load_file(str(tmp_path / "again/model.safetensors"))
    assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)
    config = json.loads((tmp_path / "again/config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["rope_theta"]) == (architecture, 2, 500.0)
    assert json.loads((tmp_path / "again/generation_config.json").read_text())["eos_token_id"] == \
        tokenizer.role_id("eos_token")


def test_train_init_from_a_model_directory_fine_tunes_it(tmp_path, text):
    directory, _ = hub_like(tmp_path, text, "llama")
    (tmp_path / "train.txt").write_text(text, encoding="utf-8")
    before, _, _ = load_model(directory)
    out = train(tmp_path / "train.txt", tmp_path / "run", "--init-from", str(directory),
                **{name: None for name in TINY_SHAPE}, max_steps=3)
    after, tokenizer, cfg = load_model(out / "final.pt")
    assert cfg.model.num_kv_heads == 2 and cfg.data.tokenizer == "bpe"
    assert tokenizer.special == {"eos_token": "<|endoftext|>"}
    assert not torch.equal(after.blocks[0].attn.qkv.weight, before.blocks[0].attn.qkv.weight)  # it trained
    assert after.blocks[0].attn.qkv.weight.shape == before.blocks[0].attn.qkv.weight.shape


def test_unsupported_directories_get_one_line(tmp_path, text):
    directory, _ = hub_like(tmp_path, text, "llama")
    config = json.loads((directory / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 500.0, "factor": 4.0}
    (directory / "config.json").write_text(json.dumps(config))
    result = run_process("import", directory, tmp_path / "x.pt")
    assert_one_line_error(result, "RoPE scaling 'yarn' is not supported")
    result = run_process("evaluate", directory, tmp_path / "absent.txt")
    assert_one_line_error(result, "RoPE scaling 'yarn'")
    assert not (tmp_path / "x.pt").exists()
