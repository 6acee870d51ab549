"""`fundamentallm export CKPT OUT.gguf`: a checkpoint as one GGUF file, for llama.cpp,
Ollama and LM Studio.

GGUF is llama.cpp's file format: metadata (the architecture's sizes, the tokenizer) and the
tensors, under llama.cpp's own names. It is written with `gguf`, the format's library
(maintained in llama.cpp's repository). What goes in is what llama.cpp's own converter,
convert_hf_to_gguf.py, would write for the `transformers` export of the same checkpoint:

* **Architecture.** llama.cpp's `qwen3` or `llama` (the two standard architectures of
  hf/architectures.py that llama.cpp has: our default model is Qwen3's function). The tensors
  are those of the `transformers` export, renamed by gguf's own name map. `llama` takes q
  and k in Meta's original layout: llama.cpp rotates interleaved channel pairs (0,1), (2,3),
  ..., where we (and transformers) pair channel i with i + D/2, so each head's rows are
  permuted to match, as the converter does; `qwen3` rotates halves, as we do.
* **Tokenizer.** llama.cpp's `gpt2` tokenizer: GPT-2's byte-to-character table, a vocabulary
  of such strings, BPE merges by rank, and a named pre-tokenizer (the regex that cuts text
  into words). The converter finds the name by hashing a tokenizer's output on a test text,
  so a vocabulary trained here never matches; we know ours is GPT-2's (`gpt-2`).
    - bpe:  its vocabulary and merges as they are.
    - byte: the 256 byte characters, no merges: every byte a token, id = byte value.
    - char: each character as the byte characters of its UTF-8 encoding, with merges that
            join a multi-byte character's bytes back into it (llama.cpp merges by rank and
            then looks the whole symbol up, so the joined pieces need not be tokens). A
            character the model never saw is left out of the ids (ours would give <unk>).
  The format needs at least one merge; where a tokenizer has none, one that joins two
  special tokens stands in, which never applies (text never produces a special token's
  text as one symbol). Our special tokens follow with their ids: the reserved ones as
  control tokens (only `parse_special` reads their text), the user's own as user-defined
  tokens (always read in text, as ours).
* **Generation.** The end-of-text token is bos and eos (as in the transformers export),
  never added to a prompt; a chat model's `<|end|>` is its end-of-turn (eot) token, and its
  template goes in as `tokenizer.chat_template`. A model that never learnt to end a text
  gets the end-of-text token in `tokenizer.ggml.suppress_tokens` (llama.cpp's sampler then
  never writes it, as ours), with the turn tokens and <unk>.
* **Types.** f32 writes every tensor as it is; f16 halves the matrices; q8_0 stores them in
  llama.cpp's 8-bit blocks (32 weights and one f16 scale). Norm gains and other vectors stay
  f32 in both, and a matrix whose rows are not whole blocks stays f16 (as the converter).

An Ollama `Modelfile` is written beside the file: `FROM` it, the chat template in Ollama's
Go template syntax for a chat model (the raw prompt otherwise), and the stop tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fundamentallm.atomic import WriteFailed, public_mode, write_text
from fundamentallm.errors import UserError
from fundamentallm.hf.architectures import architecture_for
from fundamentallm.hf.tokenizer_files import pipeline_json
from fundamentallm.interop.generation_defaults import generation_config
from fundamentallm.tokenizers import EOS, RESERVED, BPETokenizer, Tokenizer
from fundamentallm.tokenizers.base import END_OF_TURN, ROLE_TOKENS
from fundamentallm.tokenizers.byte import byte_characters
from fundamentallm.tokenizers.chat import JINJA, ChatTemplate

OUTTYPES = ("f32", "f16", "q8_0")
UNK = "<unk>"
# Pre-tokenizers llama.cpp knows, by the regex a `tokenizers` Split pre-tokenizer holds
# (imported tokenizers); ours is GPT-2's ByteLevel regex, llama.cpp's `gpt-2`.
WORDS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"  # contractions, letters
REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"  # punctuation, newlines, spaces
KNOWN_SPLITS = {WORDS + r"\p{N}" + REST: "qwen2",  # digits one by one
                WORDS + r"\p{N}{1,3}" + REST: "llama-bpe"}  # digits in threes


def gguf_library():
    try:
        import gguf  # the [gguf] extra: loaded only by a GGUF export
    except ImportError:
        raise UserError("a GGUF export needs the gguf package: pip install 'fundamentallm[gguf]'") from None
    return gguf


@dataclass
class Vocabulary:
    """A tokenizer as llama.cpp's `gpt2` tokenizer reads it."""

    tokens: list[str]  # by id, each in GPT-2's byte characters (special tokens as their text)
    types: list[int]  # gguf.TokenType per token
    merges: list[str]  # "left right", by rank
    pre: str  # llama.cpp's name for the pre-tokenizer


def byte_level(text: str) -> str:
    """`text`'s UTF-8 bytes, each as GPT-2's printable character for it."""
    table = byte_characters()
    return "".join(table[b] for b in text.encode("utf-8"))


def character_merges(chars: str) -> list[str]:
    """Merges that build each multi-byte character from its bytes, left to right: the pairs
    (first byte, second), (first two, third), ... A merge only ever joins a lead byte and
    what follows it inside one character, so none applies across characters."""
    table = byte_characters()
    merges: dict[str, None] = {}  # in order, once each (characters share their first bytes)
    for c in chars:
        pieces = [table[b] for b in c.encode("utf-8")]
        for i in range(1, len(pieces)):
            merges["".join(pieces[:i]) + " " + pieces[i]] = None
    return list(merges)


def vocabulary(tokenizer: Tokenizer, gguf: Any) -> Vocabulary:
    normal, control, user, unknown = (gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED,
                                      gguf.TokenType.UNKNOWN)
    if isinstance(tokenizer, BPETokenizer):
        vocab = bpe_vocabulary(json.loads(pipeline_json(tokenizer)), normal, control, user)
    elif tokenizer.kind == "char":
        tokens = [UNK] + [byte_level(c) for c in tokenizer.chars]
        vocab = Vocabulary(tokens, [unknown] + [normal] * len(tokenizer.chars), character_merges(tokenizer.chars),
                           "gpt-2")
    elif tokenizer.kind == "byte":
        vocab = Vocabulary(byte_characters(), [normal] * 256, [], "gpt-2")
    else:  # pragma: no cover - every registered tokenizer is handled above
        raise UserError(f"a GGUF export cannot write a {tokenizer.kind} tokenizer")
    if not isinstance(tokenizer, BPETokenizer):  # the specials, after the ordinary vocabulary
        vocab.tokens += list(tokenizer.specials)
        vocab.types += [control] * len(tokenizer.specials)
    for text in tokenizer.specials:  # the user's own are read in text (as ours); the reserved never are
        vocab.types[tokenizer.special_id(text)] = control if text in RESERVED else user
    if not vocab.merges:  # see the module docstring: one merge that never applies
        vocab.merges = [f"{EOS} {EOS}"]
    if len(vocab.tokens) != tokenizer.vocab_size:  # pragma: no cover - the ids would not match
        raise UserError(f"a GGUF export of this tokenizer would have {len(vocab.tokens)} tokens, "
                        f"not its {tokenizer.vocab_size}")
    return vocab


def bpe_vocabulary(pipeline: dict[str, Any], normal: int, control: int, user: int) -> Vocabulary:
    """A `tokenizers` byte-level BPE pipeline (ours, or an imported Qwen or Llama 3 one)."""
    model = pipeline.get("model") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or pipeline.get("normalizer"):
        raise UserError("a GGUF export needs a byte-level BPE tokenizer with no normalizer (as GPT-2's, Qwen's or "
                        "Llama 3's); export a model directory instead")
    texts = {int(i): text for text, i in model["vocab"].items()}
    types = {int(i): normal for i in texts}
    for added in pipeline.get("added_tokens", []):
        texts[added["id"]] = added["content"]
        types[added["id"]] = control if added.get("special") else user
    if sorted(texts) != list(range(len(texts))):
        raise UserError("a GGUF export needs token ids without gaps; this tokenizer's have some")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return Vocabulary([texts[i] for i in range(len(texts))], [types[i] for i in range(len(texts))], merges,
                      pre_tokenizer_name(pipeline.get("pre_tokenizer")))


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for a `tokenizers` pre-tokenizer, or a UserError."""
    steps = (pre.get("pretokenizers") if pre and pre.get("type") == "Sequence" else [pre]) or []
    if len(steps) == 1 and steps[0] and steps[0].get("type") == "ByteLevel" and steps[0].get("use_regex", True) \
            and not steps[0].get("add_prefix_space"):
        return "gpt-2"
    if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel" \
            and not steps[1].get("use_regex", True):
        name = KNOWN_SPLITS.get((steps[0].get("pattern") or {}).get("Regex", ""))
        if name:
            return name
    raise UserError("a GGUF export needs a pre-tokenizer llama.cpp knows (GPT-2's, Qwen's or Llama 3's); this "
                    "tokenizer's is another: export a model directory instead")


def llama_rope_layout(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """q or k rows (heads*D, C) from "rotate half" pairs (i, i + D/2) to llama.cpp's adjacent
    pairs (2i, 2i + 1), per head."""
    rows, cols = weight.shape
    halves = weight.reshape(heads, 2, rows // heads // 2, cols)  # (H, 2, D/2, C): the two halves of each head
    return halves.transpose(1, 2).reshape(rows, cols)  # (H, D/2, 2, C) -> (H*D, C): pairs side by side


def tensor_type(name: str, array: np.ndarray, outtype: str, gguf: Any) -> tuple[np.ndarray, Any]:
    """The array to write and its GGML type (see the module docstring: what stays f32)."""
    q = gguf.GGMLQuantizationType
    if outtype == "f32" or array.ndim < 2 or name.endswith("_norm.weight"):
        return array.astype(np.float32), q.F32
    if outtype == "q8_0":
        try:
            return gguf.quants.quantize(array.astype(np.float32), q.Q8_0), q.Q8_0
        except gguf.QuantError:  # rows that are not whole 32-weight blocks
            pass
    return array.astype(np.float16), q.F16


def check_architecture(cfg: Any) -> None:
    """A UserError unless llama.cpp's qwen3 or llama architecture computes this model."""
    if architecture_for(cfg).model_type not in ("llama", "qwen3"):
        raise UserError("llama.cpp's qwen3 and llama architectures need RMSNorm, RoPE and SwiGLU (--norm rmsnorm "
                        "--position rope --activation swiglu); this model differs: export a model directory instead")


def write_gguf(model: torch.nn.Module, tokenizer: Tokenizer, cfg: Any, out: Path, outtype: str, name: str) -> str:
    """Write `out` (atomically: a temporary file beside it, then renamed) and its Modelfile;
    return llama.cpp's name for the architecture. `outtype`: one of OUTTYPES."""
    gguf = gguf_library()
    check_architecture(cfg.model)
    arch = architecture_for(cfg.model)
    m = cfg.model
    head_dim, kv = m.model_dim // m.num_heads, arch.hf_config(m)["num_key_value_heads"]
    gguf_arch = gguf.MODEL_ARCH.QWEN3 if arch.model_type == "qwen3" else gguf.MODEL_ARCH.LLAMA
    arch_name = gguf.MODEL_ARCH_NAMES[gguf_arch]
    names = gguf.get_tensor_name_map(gguf_arch, m.num_layers)
    vocab = vocabulary(tokenizer, gguf)
    chat = cfg.data.format == "chat"
    ends = chat or cfg.data.doc_boundary == "eos"
    generation = generation_config(tokenizer, chat, ends)

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, arch_name)
        writer.add_name(name)
        writer.add_description("a FundamentaLLM model")
        writer.add_context_length(m.context_length)
        writer.add_embedding_length(m.model_dim)
        writer.add_block_count(m.num_layers)
        writer.add_feed_forward_length(arch.hf_config(m)["intermediate_size"])
        writer.add_head_count(m.num_heads)
        writer.add_head_count_kv(kv)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_rope_dimension_count(head_dim)
        writer.add_rope_freq_base(m.rope_theta)
        writer.add_layer_norm_rms_eps(arch.hf_config(m)["rms_norm_eps"])
        writer.add_vocab_size(tokenizer.vocab_size)
        writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocab.pre)
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.types)
        writer.add_token_merges(vocab.merges)
        if generation["bos_token_id"] is not None:
            writer.add_bos_token_id(generation["bos_token_id"])
            writer.add_eos_token_id(generation["bos_token_id"])
            writer.add_pad_token_id(generation["bos_token_id"])
        writer.add_add_bos_token(False)  # as ours: a prompt is its text alone
        writer.add_add_eos_token(False)
        if tokenizer.unk_id is not None:
            writer.add_unk_token_id(tokenizer.unk_id)
        if chat:
            writer.add_eot_token_id(ChatTemplate(tokenizer).end_id)
            writer.add_chat_template(JINJA)
        if generation.get("suppress_tokens"):
            writer.add_key_value("tokenizer.ggml.suppress_tokens", generation["suppress_tokens"],
                                 gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.INT32)
        writer.add_sampling_temp(generation["temperature"])
        for hf_name, tensor in arch.to_hf(model.state_dict(), m).items():
            tensor = tensor.float()
            if arch.model_type == "llama" and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
                tensor = llama_rope_layout(tensor, m.num_heads if hf_name.endswith("q_proj.weight") else kv)
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:  # pragma: no cover - every standard tensor has a GGUF name
                raise UserError(f"a GGUF export has no name for {hf_name}")
            array, qtype = tensor_type(gguf_name, tensor.numpy(), outtype, gguf)
            writer.add_tensor(gguf_name, array, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(tmp, public_mode())  # mkstemp's 0600 would stay with the renamed file
        os.replace(tmp, out)
    except OSError as exc:
        raise WriteFailed(out, exc, None) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    write_text(modelfile_path(out), ollama_modelfile(out.name, tokenizer, chat, ends, generation))
    return arch_name


def modelfile_path(out: Path) -> Path:
    return out.parent / "Modelfile"


def ollama_modelfile(gguf_name: str, tokenizer: Tokenizer, chat: bool, ends: bool, generation: dict[str, Any]) -> str:
    """An Ollama Modelfile: the weights, the prompt template, the stop tokens and our sampling
    defaults. Ollama's templates are Go templates; the chat one renders as tokenizers/chat.py."""
    lines = [f"FROM ./{gguf_name}", ""]
    if chat:
        template = ("{{- range .Messages }}<|{{ .Role }}|>{{ .Content }}" + END_OF_TURN + "{{ end }}"
                    + ROLE_TOKENS["assistant"])
        lines.append(f'TEMPLATE """{template}"""')
    else:  # a text model continues the prompt as it is
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    stops = [END_OF_TURN, EOS] if chat else ([EOS] if ends else [])
    lines += [f'PARAMETER stop "{text}"' for text in stops if tokenizer.special_id(text) is not None]
    lines.append(f"PARAMETER temperature {generation['temperature']}")
    return "\n".join(lines) + "\n"
