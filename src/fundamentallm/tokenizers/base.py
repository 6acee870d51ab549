"""The interface every tokenizer implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class Tokenizer(ABC):
    """Maps text to token ids and back. Id `unk_id` stands for text it cannot represent."""

    kind: str  # registry name, stored in checkpoints
    unk_id: int | None = None

    @classmethod
    @abstractmethod
    def train(cls, text: str) -> "Tokenizer":
        """Build the vocabulary from training text."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        """Restore from `to_dict()` output."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """Plain Python values only (strings, ints, lists), so checkpoints load with weights_only."""

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...
