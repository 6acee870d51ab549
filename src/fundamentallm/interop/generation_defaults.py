"""What an exported model generates by default: our `generate` settings, its stop tokens and
the tokens it must never write, for every format (generation_config.json, GGUF metadata and
the Ollama Modelfile)."""

from __future__ import annotations

from fundamentallm.tokenizers import EOS, RESERVED, BPETokenizer, Tokenizer
from fundamentallm.tokenizers.chat import ChatTemplate


def generation_config(tokenizer: Tokenizer, chat: bool, ends: bool = True) -> dict:
    """Our `generate` defaults (temperature 0.8, no top-k), never <unk> or a turn token that
    does not end the text (as ours), and the end of a text (a chat model's reply: the end of
    its turn) ends generation, as ours."""
    eos = tokenizer.eos_id
    stops = ChatTemplate(tokenizer).stop_ids if chat else eos
    config = {"do_sample": True, "temperature": 0.8, "top_k": 0, "top_p": 1.0, "max_new_tokens": 200,
              "bos_token_id": boundary_id(tokenizer, "bos_token"), "eos_token_id": stops, "pad_token_id": eos}
    stop_list = (stops if isinstance(stops, list) else [stops]) if ends else []  # never learnt: never written
    suppressed = ([tokenizer.unk_id] if tokenizer.unk_id is not None else []) + [
        i for text in RESERVED if (i := tokenizer.special_id(text)) is not None and i not in stop_list]
    if suppressed:  # as our generate: never <unk>, nor a turn token in the middle of a text
        config["suppress_tokens"] = suppressed
    return config


def boundary_id(tokenizer: Tokenizer, role: str) -> int | None:
    """The id of the bos or eos token: ours is the end-of-text token (both, as GPT-2's), an
    imported tokenizer's its own."""
    own = tokenizer.role_id(role) if isinstance(tokenizer, BPETokenizer) else None
    return own if own is not None else tokenizer.special_id(EOS)
