"""The decoder-only transformer. Imports nothing from training, evaluation or the CLI."""

from fundamentallm.model.kv_cache import KVCache
from fundamentallm.model.transformer import GPT

__all__ = ["GPT", "KVCache"]
