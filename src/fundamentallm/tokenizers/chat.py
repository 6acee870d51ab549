"""The chat template: a conversation as token ids, the same in training, serving and exports.

A conversation is a list of messages, {"role": "system" | "user" | "assistant", "content":
text}, as in OpenAI's API. Each message becomes its role's turn token, its content, and the
end-of-turn token:

    <|system|>You answer briefly.<|end|><|user|>Hello<|end|><|assistant|>Hi.<|end|>

A reply is asked for with the assistant's turn token after the last message (the generation
prompt), and it is over at its `<|end|>`. Turn tokens are special tokens, so nothing a user
types can open or close a turn.

Training on conversations scores only what the assistant says (`trained`: its content and its
closing `<|end|>`, so the model learns to stop): the system's and user's tokens are context,
not targets (as in TRL's assistant-only loss and nanochat's SFT masking).

`JINJA` is the same template in the form Hugging Face's `apply_chat_template` runs; the
export writes it into tokenizer_config.json. A checkpoint trained on conversations says so in
its config (`data.format: chat`), and its tokenizer holds the turn tokens: together, the
template that everything talking to the model uses.
"""

from __future__ import annotations

from typing import Any

from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import END_OF_TURN, ROLE_TOKENS, Tokenizer

JINJA = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role ' + message['role']) }}{%- endif -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '" + END_OF_TURN + "' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '" + ROLE_TOKENS["assistant"] + "' }}{%- endif -%}"
)


def check_messages(messages: Any) -> list[dict[str, str]]:
    """The messages of one conversation, or a UserError saying what is wrong with them."""
    if not isinstance(messages, list) or not messages:
        raise UserError("'messages' must be a non-empty list")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise UserError(f"message {i + 1} is not an object")
        if message.get("role") not in ROLE_TOKENS:
            raise UserError(f"message {i + 1}: role {message.get('role')!r}; use one of {', '.join(ROLE_TOKENS)}")
        if not isinstance(message.get("content"), str):
            raise UserError(f"message {i + 1}: 'content' must be a string")
    return messages


class ChatTemplate:
    """Renders conversations with one tokenizer's turn tokens."""

    def __init__(self, tokenizer: Tokenizer):
        ids = {role: tokenizer.special_id(text) for role, text in ROLE_TOKENS.items()}
        end = tokenizer.special_id(END_OF_TURN)
        if end is None or None in ids.values():
            raise UserError("this model's tokenizer has no chat turn tokens (it was saved before they were "
                            "reserved): fine-tune it with --format chat, which adds them")
        self.tokenizer, self.role_ids, self.end_id = tokenizer, ids, end

    @property
    def stop_ids(self) -> list[int]:
        """Where a reply ends: its end-of-turn token (or an end of text)."""
        return [self.end_id] + ([self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else [])

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False,
               train_on: str = "assistant") -> tuple[list[int], list[bool]]:
        """(ids, trained): the conversation's token ids, and for each whether it is a training
        target (`train_on` "assistant": the assistant's content and end-of-turn tokens; "all":
        every token)."""
        ids: list[int] = []
        trained: list[bool] = []
        for message in check_messages(messages):
            content = self.tokenizer.encode(message["content"])
            scored = train_on == "all" or message["role"] == "assistant"
            ids += [self.role_ids[message["role"]], *content, self.end_id]
            trained += [train_on == "all", *[scored] * len(content), scored]
        if add_generation_prompt:
            ids.append(self.role_ids["assistant"])
            trained.append(False)
        return ids, trained

    def prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The ids a reply is generated after: the conversation and the assistant's turn token."""
        return self.render(messages, add_generation_prompt=True)[0]
