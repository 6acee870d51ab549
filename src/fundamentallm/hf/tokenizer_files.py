"""Our tokenizers as Hugging Face tokenizer files, and back.

`transformers` loads a tokenizer from `tokenizer.json` (the `tokenizers` library's format)
with `tokenizer_config.json` beside it. Each of ours is written as a `tokenizers` pipeline
that gives the same ids for every text:

    char  a BPE model with no merges over our characters, id 0 `<unk>` for any other one,
          no pre-tokenizer (the text is one word, split into characters), decoded by
          concatenation (Fuse);
    byte  GPT-2's byte-level mapping (each byte a printable character) and a BPE model with
          no merges over the 256 bytes, id = byte value;
    bpe   already a `tokenizers` pipeline: its JSON as it is.

Our special tokens (end of text, the chat turns, the user's own) follow as the pipeline's
added tokens, with the same ids; the end-of-text token is declared as `bos_token` and
`eos_token` (as GPT-2 does), so tools that need a document start or end (lm-evaluation-
harness, generation) find one. A model trained on conversations also gets its
`chat_template`, the Jinja form of tokenizers/chat.py.

Each tokenizer also leaves its own description in `tokenizer_config.json`
(`fundamentallm_tokenizer`), so an import gives back the same tokenizer, not a look-alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken
from tokenizers import Tokenizer as Pipeline
from tokenizers import decoders, models, pre_tokenizers

from fundamentallm.errors import UserError
from fundamentallm.tokenizers import EOS, BPETokenizer, Tokenizer, tokenizer_from_dict
from fundamentallm.tokenizers.byte import byte_characters
from fundamentallm.tokenizers.chat import JINJA

UNK = "<unk>"
SPECIAL_ROLES = ("bos_token", "eos_token", "unk_token", "pad_token")


def pipeline_json(tokenizer: Tokenizer) -> str:
    """The tokenizer.json text of one of our tokenizers."""
    if isinstance(tokenizer, BPETokenizer):
        pipeline = Pipeline.from_str(tokenizer.serialized)
    elif tokenizer.kind == "char":
        vocab = {UNK: 0, **{c: i + 1 for i, c in enumerate(tokenizer.chars)}}
        pipeline = Pipeline(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
        pipeline.decoder = decoders.Fuse()
    elif tokenizer.kind == "byte":
        pipeline = Pipeline(models.BPE(vocab={c: b for b, c in enumerate(byte_characters())}, merges=[]))
        pipeline.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        pipeline.decoder = decoders.ByteLevel()
    else:  # pragma: no cover - every registered tokenizer is handled above
        raise UserError(f"cannot export a {tokenizer.kind} tokenizer")
    # Added after the vocabulary, in order: the library gives them the ids ours have.
    pipeline.add_special_tokens([AddedToken(text, special=True, normalized=False) for text in tokenizer.specials])
    if pipeline.get_vocab_size() != tokenizer.vocab_size:  # pragma: no cover - a vocabulary with holes
        raise UserError(f"cannot export this tokenizer: its special tokens would get other ids "
                        f"({pipeline.get_vocab_size()} tokens against {tokenizer.vocab_size})")
    return pipeline.to_str()


def special_tokens(tokenizer: Tokenizer) -> dict[str, Any]:
    """Role → token text: the end-of-text token as bos and eos, the char tokenizer's <unk>, an
    imported tokenizer's own; the other special tokens as additional_special_tokens."""
    special: dict[str, Any] = dict(tokenizer.special) if isinstance(tokenizer, BPETokenizer) else {}
    if tokenizer.unk_id is not None:
        special["unk_token"] = UNK
    if tokenizer.special_id(EOS) is not None:
        special.setdefault("bos_token", EOS)
        special.setdefault("eos_token", EOS)
    others = [text for text in tokenizer.specials if text != EOS]
    if others:
        special["additional_special_tokens"] = others
    return special


def tokenizer_files(tokenizer: Tokenizer, context_length: int, chat: bool = False) -> dict[str, str]:
    """File name → content: tokenizer.json, tokenizer_config.json, special_tokens_map.json
    (`chat`: the model was trained on conversations, and its template goes with it)."""
    special = special_tokens(tokenizer)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,  # decode exactly; no space tidying
        **special,
        "fundamentallm_tokenizer": tokenizer.to_dict(),
    }
    if chat:
        config["chat_template"] = JINJA
    return {"tokenizer.json": pipeline_json(tokenizer),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
            "special_tokens_map.json": json.dumps(special, indent=2, ensure_ascii=False)}


def token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({str(exc).splitlines()[0][:100]})") from None


def read_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer of a Hugging Face model directory (its tokenizer.json: fast tokenizers only)."""
    config_path = directory / "tokenizer_config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    if not isinstance(config, dict):
        raise UserError(f"{config_path}: not a tokenizer config (expected a JSON object)")
    if isinstance(config.get("fundamentallm_tokenizer"), dict):
        return tokenizer_from_dict(config["fundamentallm_tokenizer"])
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise UserError(f"{directory}: no tokenizer.json (only `tokenizers` tokenizers can be imported; "
                        "a sentencepiece tokenizer.model is not read)")
    try:
        serialized = path.read_text(encoding="utf-8")
        json.loads(serialized)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: not a tokenizer (not readable JSON)") from None
    special = {role: text for role in SPECIAL_ROLES if (text := token_text(config.get(role))) is not None}
    return BPETokenizer(serialized, special)
