"""Conversations as training data (`--format chat`): JSONL records of OpenAI-style messages.

Each line holds one conversation, {"messages": [{"role": "system" | "user" | "assistant",
"content": "..."}, ...]}, rendered with the chat template (tokenizers/chat.py) and ended by
the end-of-text token. Next to the ids goes a mask saying which targets are trained: the
assistant's tokens (`--train-on assistant`, the default) or all of them. Conversations are
few megabytes even for a large fine-tuning set, so they are held in memory (the token cache
is for corpora of pretraining size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fundamentallm.config.schema import DataConfig
from fundamentallm.data.text import JSONL_SUFFIXES, jsonl_records
from fundamentallm.errors import UserError
from fundamentallm.tokenizers import Tokenizer, build_tokenizer
from fundamentallm.tokenizers.chat import ChatTemplate, check_messages


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    """The conversations of one JSONL file; a bad record is a one-line error naming its line."""
    if path.suffix not in JSONL_SUFFIXES:
        raise UserError(f"{path}: --format chat reads JSONL files (one {{\"messages\": [...]}} per line)")
    conversations = []
    for number, record in jsonl_records(path):
        if not isinstance(record, dict) or "messages" not in record:
            raise UserError(f"{path}:{number}: a chat record needs a 'messages' list")
        try:
            messages = check_messages(record["messages"])
        except UserError as exc:
            raise UserError(f"{path}:{number}: {exc}") from None
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError(f"{path}:{number}: the conversation has no assistant message (nothing to learn)")
        conversations.append(messages)
    if not conversations:
        raise UserError(f"{path}: holds no conversations")
    return conversations


def rendered(conversations: list[list[dict[str, str]]], template: ChatTemplate, train_on: str
             ) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """All conversations as one stream of ids, each ended by the end-of-text token; the
    trained mask beside it; and the characters and bytes of the trained messages (for bits
    per character and per byte)."""
    ids: list[int] = []
    trained: list[bool] = []
    chars = size = 0
    eos = template.tokenizer.eos_id
    for messages in conversations:
        conversation, mask = template.render(messages, train_on=train_on)
        ids += [*conversation, eos]
        trained += [*mask, False]
        for m in messages:
            if train_on == "all" or m["role"] == "assistant":
                chars, size = chars + len(m["content"]), size + len(m["content"].encode("utf-8"))
    return torch.tensor(ids, dtype=torch.int32), np.array(trained, dtype=bool), (chars, size)


@dataclass
class Conversations:
    """Conversations as ids: the training part and the held-out part, with their trained masks."""

    tokenizer: Tokenizer
    train: torch.Tensor
    train_mask: np.ndarray
    val: torch.Tensor | None
    val_mask: np.ndarray | None
    chars_per_token: float  # of the held-out trained text
    note: str  # for the start summary
    scored_text: tuple[int, int] = (0, 0)  # characters and UTF-8 bytes of the training part's trained messages


def conversation_tokens(cfg: DataConfig, files: list[Path], val_files: list[Path],
                        tokenizer: Tokenizer | None) -> Conversations:
    """The conversations behind the data flags, rendered (the held-out part: --validation-data,
    or the last --val-split of the conversations, whole ones)."""
    conversations = [c for f in files for c in read_conversations(f)]
    if val_files:
        held_out = [c for f in val_files for c in read_conversations(f)]
    else:
        count = round(len(conversations) * cfg.val_split)
        count = max(1, count) if cfg.val_split > 0 and len(conversations) > 1 else 0
        conversations, held_out = conversations[:len(conversations) - count], conversations[len(conversations) - count:]
    if tokenizer is None:  # a model trained from scratch on conversations: the tokenizer learns their text
        tokenizer = build_tokenizer(cfg.tokenizer, [m["content"] for c in conversations for m in c],
                                    cfg.bpe_vocab_size, cfg.special_tokens)
    template = ChatTemplate(tokenizer)
    train, train_mask, scored_text = rendered(conversations, template, cfg.train_on)
    val = val_mask = None
    chars_per_token = 1.0
    if held_out:
        val, val_mask, (chars, _) = rendered(held_out, template, cfg.train_on)
        chars_per_token = chars / max(1, int(val_mask.sum()))
    note = (f"{len(conversations):,} conversations ({len(train):,} tokens, {train_mask.mean():.0%} of them trained: "
            f"--train-on {cfg.train_on}), each ended by the end-of-text token")
    return Conversations(tokenizer, train, train_mask, val, val_mask, chars_per_token, note, scored_text)
