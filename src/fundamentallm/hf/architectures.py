"""Our model in the Hugging Face `transformers` vocabulary, and back.

Each `Architecture` is one standard `transformers` model that computes exactly the function
of some of our variants (checked against the `transformers` source, transformers 5.x):

    llama   RMSNorm + RoPE + SwiGLU, no QK-norm    LlamaForCausalLM
    qwen3   the same with per-head QK-norm         Qwen3ForCausalLM
    gpt2    LayerNorm + learned positions + GELU   GPT2LMHeadModel

What they share with ours, and so need no conversion: pre-norm blocks; RoPE in the "rotate
half" layout (channel i pairs with i + D/2, inverse frequencies theta^(-2i/D)); attention
scaled by 1/sqrt(D); Qwen3's q_norm/k_norm over each head's D channels before RoPE, as
ours; norms computed as x * rsqrt(mean(x^2) + eps) * gain. What differs is bookkeeping:
our fused qkv and gate_up matrices are split into q/k/v and gate/up, GPT-2's Conv1D
stores matrices transposed and has biases (exported as zeros, and required to be zero on
import), a norm without a gain is exported with a gain of ones, and torch's RMSNorm
default epsilon (the dtype's eps) is written as float32's eps, so the functions are equal in
fp32. Every other variant (ReLU² MLPs, LayerNorm with RoPE, ...) leaves as `fundamentallm`:
our own modelling code, shipped beside the weights (remote/).

A `Link` ties one of our tensors to the one or more `transformers` tensors it is made of
(concatenated along dim 0, after a transpose for Conv1D), so one table serves export and
import and the round trip is exact by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from fundamentallm.config import ModelConfig
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.model.transformer import kv_heads, mlp_hidden

FLOAT32_EPS = float(torch.finfo(torch.float32).eps)  # what torch's RMSNorm uses for eps=None in fp32
LAYERNORM_EPS = 1e-5


@dataclass(frozen=True)
class Link:
    ours: str
    theirs: tuple[str, ...]
    transpose: bool = False  # GPT-2's Conv1D: (in, out) instead of nn.Linear's (out, in)
    gain: bool = False  # a norm gain: absent from our weights when --no-norm-gain (then ones)


@dataclass
class Layout:
    """Every tensor of one model: links, and `transformers` tensors that must be zero (biases)."""

    links: list[Link] = field(default_factory=list)
    zeros: dict[str, tuple[int, ...]] = field(default_factory=dict)


def norm_eps(cfg: ModelConfig) -> float:
    if cfg.norm_eps is not None:
        return cfg.norm_eps
    return FLOAT32_EPS if cfg.norm == "rmsnorm" else LAYERNORM_EPS


def read_eps(value: Any, default: float) -> float | None:
    """Our norm_eps for a stored epsilon: None where it is our default."""
    return None if value is None or float(value) == default else float(value)


def rope_theta(hf: dict[str, Any]) -> float:
    """The RoPE base of a config.json, refusing scaled variants (llama3, yarn, linear, ...)."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default")) if isinstance(params, dict) else "?"
    if kind != "default":
        raise UserError(f"RoPE scaling {kind!r} is not supported (only plain RoPE)")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def require(hf: dict[str, Any], name: str, wanted: Any, default: Any = None) -> None:
    value = hf.get(name, default)
    if value != wanted:
        raise UserError(f"{name} {value!r} is not supported (FundamentaLLM models need {wanted!r})")


def differences(cfg: ModelConfig, wanted: dict[str, Any], more: list[str] | None = None) -> str | None:
    wrong = [f"{k} {getattr(cfg, k)!r} (it needs {v!r})" for k, v in wanted.items() if getattr(cfg, k) != v]
    return ", ".join(wrong + (more or [])) or None


class Architecture:
    model_type: str
    hf_class: str

    def mismatch(self, cfg: ModelConfig) -> str | None:
        """Why this architecture does not compute `cfg`'s function (None: it does)."""
        raise NotImplementedError

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        raise NotImplementedError

    def model_fields(self, hf: dict[str, Any]) -> dict[str, Any]:
        """ModelConfig fields for a config.json; unsupported options are one-line errors."""
        raise NotImplementedError

    def layout(self, cfg: ModelConfig) -> Layout:
        raise NotImplementedError

    # ---- the same for every architecture ----
    def to_hf(self, weights: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
        layout = self.layout(cfg)
        out: dict[str, torch.Tensor] = {}
        for link in layout.links:
            tensor = weights.get(link.ours)
            if tensor is None and link.gain:
                tensor = torch.ones(self.gain_size(link, cfg))
            tensor = tensor.T if link.transpose else tensor
            pieces = tensor.split([self.piece_size(n, cfg) for n in link.theirs]) if len(link.theirs) > 1 else [tensor]
            for name, piece in zip(link.theirs, pieces):
                out[name] = piece.contiguous().clone()  # safetensors stores each tensor on its own
        for name, shape in layout.zeros.items():
            out[name] = torch.zeros(shape)
        return out

    def from_hf(self, tensors: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
        layout = self.layout(cfg)
        missing = [n for link in layout.links for n in link.theirs if n not in tensors]
        if missing:
            raise UserError(f"the weights lack {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1
                                                                  else ""))
        for name in layout.zeros:
            if name in tensors and bool(tensors[name].any()):
                raise UserError(f"{name}: non-zero biases are not supported (FundamentaLLM layers have none)")
        weights = {}
        for link in layout.links:
            joined = torch.cat([tensors[n] for n in link.theirs])  # fused pieces are never transposed
            weights[link.ours] = (joined.T if link.transpose else joined).float().contiguous()
        return weights

    def piece_size(self, name: str, cfg: ModelConfig) -> int:
        """Rows of our fused matrix that one `transformers` tensor holds."""
        head_dim = cfg.model_dim // cfg.num_heads
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            return kv_heads(cfg) * head_dim
        if name.endswith(("gate_proj.weight", "up_proj.weight")):
            return mlp_hidden(cfg)
        if name.endswith("q_proj.weight"):
            return cfg.model_dim
        raise AssertionError(f"{name} is not a piece of a fused matrix")

    @staticmethod
    def gain_size(link: Link, cfg: ModelConfig) -> int:
        return cfg.model_dim // cfg.num_heads if link.ours.endswith(("q_norm.weight", "k_norm.weight")) else cfg.model_dim


class Llama(Architecture):
    model_type, hf_class = "llama", "LlamaForCausalLM"
    qk_norm = False

    def mismatch(self, cfg: ModelConfig) -> str | None:
        wanted = {"norm": "rmsnorm", "position": "rope", "activation": "swiglu", "qk_norm": self.qk_norm}
        return differences(cfg, wanted)

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.model_dim, "intermediate_size": mlp_hidden(cfg),
            "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": kv_heads(cfg), "head_dim": cfg.model_dim // cfg.num_heads,
            "hidden_act": "silu", "max_position_embeddings": cfg.context_length,
            "rms_norm_eps": norm_eps(cfg), "tie_word_embeddings": cfg.tie_embeddings,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "rope_theta": cfg.rope_theta,  # where transformers 4.x reads it
            "attention_bias": False, "mlp_bias": False, "attention_dropout": cfg.dropout,
            "bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
        }

    def model_fields(self, hf: dict[str, Any]) -> dict[str, Any]:
        require(hf, "hidden_act", "silu", "silu")
        require(hf, "attention_bias", False, False)
        require(hf, "mlp_bias", False, False)
        heads, width = int(hf["num_attention_heads"]), int(hf["hidden_size"])
        if hf.get("head_dim") not in (None, width // heads):
            raise UserError(f"head_dim {hf['head_dim']} is not hidden_size / num_attention_heads "
                            f"({width // heads}), which FundamentaLLM models need")
        kv = int(hf.get("num_key_value_heads") or heads)
        intermediate = int(hf["intermediate_size"])
        return {"vocab_size": int(hf["vocab_size"]), "model_dim": width,
                "num_layers": int(hf["num_hidden_layers"]), "num_heads": heads,
                "num_kv_heads": None if kv == heads else kv,
                "context_length": int(hf.get("max_position_embeddings", 2048)),
                "norm": "rmsnorm", "position": "rope", "activation": "swiglu", "qk_norm": self.qk_norm,
                "norm_gain": True, "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
                "rope_theta": rope_theta(hf),
                "mlp_hidden": None if intermediate == 8 * width // 3 else intermediate,
                "norm_eps": read_eps(hf.get("rms_norm_eps", 1e-6), FLOAT32_EPS)}

    def layout(self, cfg: ModelConfig) -> Layout:
        links = [Link("embed.weight", ("model.embed_tokens.weight",))]
        for i in range(cfg.num_layers):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            attn = theirs + "self_attn."
            links += [
                Link(ours + "attn_norm.weight", (theirs + "input_layernorm.weight",), gain=True),
                Link(ours + "attn.qkv.weight", (attn + "q_proj.weight", attn + "k_proj.weight", attn + "v_proj.weight")),
                Link(ours + "attn.proj.weight", (attn + "o_proj.weight",)),
                Link(ours + "mlp_norm.weight", (theirs + "post_attention_layernorm.weight",), gain=True),
                Link(ours + "mlp.gate_up.weight", (theirs + "mlp.gate_proj.weight", theirs + "mlp.up_proj.weight")),
                Link(ours + "mlp.down.weight", (theirs + "mlp.down_proj.weight",)),
            ]
            if self.qk_norm:
                links += [Link(ours + "attn.q_norm.weight", (attn + "q_norm.weight",), gain=True),
                          Link(ours + "attn.k_norm.weight", (attn + "k_norm.weight",), gain=True)]
        links.append(Link("norm.weight", ("model.norm.weight",), gain=True))
        if not cfg.tie_embeddings:
            links.append(Link("head.weight", ("lm_head.weight",)))
        return Layout(links)


class Qwen3(Llama):
    model_type, hf_class = "qwen3", "Qwen3ForCausalLM"
    qk_norm = True

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {**super().hf_config(cfg), "use_sliding_window": False, "sliding_window": None,
                "max_window_layers": cfg.num_layers, "layer_types": ["full_attention"] * cfg.num_layers}

    def model_fields(self, hf: dict[str, Any]) -> dict[str, Any]:
        require(hf, "use_sliding_window", False, False)
        return super().model_fields(hf)


class GPT2(Architecture):
    model_type, hf_class = "gpt2", "GPT2LMHeadModel"

    def mismatch(self, cfg: ModelConfig) -> str | None:
        wanted = {"norm": "layernorm", "position": "learned", "activation": "gelu", "qk_norm": False,
                  "tie_embeddings": True}
        gqa = ["grouped-query attention (it has none)"] if kv_heads(cfg) != cfg.num_heads else []
        return differences(cfg, wanted, gqa)

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {
            "architectures": [self.hf_class], "model_type": self.model_type,
            "vocab_size": cfg.vocab_size, "n_embd": cfg.model_dim, "n_layer": cfg.num_layers,
            "n_head": cfg.num_heads, "n_positions": cfg.context_length, "n_inner": mlp_hidden(cfg),
            "activation_function": "gelu",  # exact GELU, as ours (GPT-2's own is "gelu_new", tanh)
            "layer_norm_epsilon": norm_eps(cfg), "tie_word_embeddings": True,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
            "reorder_and_upcast_attn": False, "bos_token_id": None, "eos_token_id": None,
        }

    def model_fields(self, hf: dict[str, Any]) -> dict[str, Any]:
        require(hf, "activation_function", "gelu", "gelu_new")
        require(hf, "scale_attn_weights", True, True)
        require(hf, "scale_attn_by_inverse_layer_idx", False, False)
        require(hf, "add_cross_attention", False, False)
        require(hf, "tie_word_embeddings", True, True)
        width = int(hf["n_embd"])
        inner = hf.get("n_inner")
        return {"vocab_size": int(hf["vocab_size"]), "model_dim": width, "num_layers": int(hf["n_layer"]),
                "num_heads": int(hf["n_head"]), "num_kv_heads": None,
                "context_length": int(hf.get("n_positions", 1024)),
                "norm": "layernorm", "position": "learned", "activation": "gelu", "qk_norm": False,
                "norm_gain": True, "tie_embeddings": True, "rope_theta": 10000.0,
                "mlp_hidden": None if inner in (None, 4 * width) else int(inner),
                "norm_eps": read_eps(hf.get("layer_norm_epsilon", LAYERNORM_EPS), LAYERNORM_EPS)}

    def layout(self, cfg: ModelConfig) -> Layout:
        C, hidden = cfg.model_dim, mlp_hidden(cfg)
        links = [Link("embed.weight", ("transformer.wte.weight",)),
                 Link("positions.table.weight", ("transformer.wpe.weight",))]
        zeros: dict[str, tuple[int, ...]] = {}
        for i in range(cfg.num_layers):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            links += [
                Link(ours + "attn_norm.weight", (theirs + "ln_1.weight",), gain=True),
                Link(ours + "attn.qkv.weight", (theirs + "attn.c_attn.weight",), transpose=True),
                Link(ours + "attn.proj.weight", (theirs + "attn.c_proj.weight",), transpose=True),
                Link(ours + "mlp_norm.weight", (theirs + "ln_2.weight",), gain=True),
                Link(ours + "mlp.up.weight", (theirs + "mlp.c_fc.weight",), transpose=True),
                Link(ours + "mlp.down.weight", (theirs + "mlp.c_proj.weight",), transpose=True),
            ]
            zeros.update({theirs + "ln_1.bias": (C,), theirs + "attn.c_attn.bias": (3 * C,),
                          theirs + "attn.c_proj.bias": (C,), theirs + "ln_2.bias": (C,),
                          theirs + "mlp.c_fc.bias": (hidden,), theirs + "mlp.c_proj.bias": (C,)})
        links.append(Link("norm.weight", ("transformer.ln_f.weight",), gain=True))
        zeros["transformer.ln_f.bias"] = (C,)
        return Layout(links, zeros)


class FundamentaLLM(Architecture):
    """Any variant, as our own modelling code (remote/), with our own tensor names."""

    model_type, hf_class = "fundamentallm", "FundamentaLLMForCausalLM"
    FIELDS = ("vocab_size", "model_dim", "num_layers", "num_heads", "num_kv_heads", "context_length",
              "dropout", "norm", "position", "activation", "norm_gain", "qk_norm", "tie_embeddings",
              "rope_theta", "mlp_hidden", "norm_eps")

    def mismatch(self, cfg: ModelConfig) -> str | None:
        return None

    def hf_config(self, cfg: ModelConfig) -> dict[str, Any]:
        return {"architectures": [self.hf_class], "model_type": self.model_type,
                "auto_map": {"AutoConfig": "configuration_fundamentallm.FundamentaLLMConfig",
                             "AutoModelForCausalLM": "modeling_fundamentallm.FundamentaLLMForCausalLM"},
                **{name: getattr(cfg, name) for name in self.FIELDS},
                "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": None, "eos_token_id": None}

    def model_fields(self, hf: dict[str, Any]) -> dict[str, Any]:
        # Read as data; the modelling code beside it is never run by FundamentaLLM.
        return {name: hf[name] for name in self.FIELDS if name in hf}

    def layout(self, cfg: ModelConfig) -> Layout:
        with torch.device("meta"):  # names only; no memory
            names = list(GPT(cfg).state_dict())
        if cfg.tie_embeddings:
            names.remove("head.weight")
        return Layout([Link(name, ("model." + name,)) for name in names])


STANDARD = (Qwen3(), Llama(), GPT2())
ARCHITECTURES = {a.model_type: a for a in (*STANDARD, FundamentaLLM())}


def architecture_for(cfg: ModelConfig) -> Architecture:
    """The standard architecture that computes this model, else our own."""
    return next((a for a in STANDARD if a.mismatch(cfg) is None), ARCHITECTURES["fundamentallm"])


def nearest_mismatch(cfg: ModelConfig) -> str:
    """Why the nearest standard architecture does not fit, for the export message."""
    nearest = min(STANDARD, key=lambda a: a.mismatch(cfg).count("(it needs"))
    return f"the nearest, {nearest.model_type}, differs in {nearest.mismatch(cfg)}"
