"""Sampling text from a model, token by token, with a KV cache.

The next-token distribution passes through a chain of logits rules (temperature, top-k,
top-p, banned tokens); a new sampling control is one new rule class. The cache holds at
most `context_length` positions: when it is full, it restarts from the most recent half
of the text, so any length can be generated at an amortised cost well below recomputing
the whole context for every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import torch

from fundamentallm.errors import UserError
from fundamentallm.model import GPT


class LogitsRule(Protocol):
    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, V) → logits (B, V); -inf removes a token."""


class BanTokens:
    def __init__(self, ids: list[int]):
        self.ids = ids

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        logits[:, self.ids] = float("-inf")
        return logits


class Temperature:
    """Divides logits by T: below 1 sharpens the distribution, above 1 flattens it."""

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keeps the k most likely tokens (Fan et al. 2018)."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        kth = torch.topk(logits, min(self.k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP:
    """Nucleus sampling (Holtzman et al. 2020): the smallest set of tokens whose
    probabilities add up to at least p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V) each
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        sorted_logits[before >= self.p] = float("-inf")  # the top token always stays
        return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


@dataclass
class SamplingOptions:
    max_tokens: int = 200
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    num_samples: int = 1
    use_cache: bool = True  # False recomputes the whole context for every token (benchmarks)

    def check(self) -> None:
        if self.max_tokens < 0:
            raise UserError(f"--max-tokens must be 0 or more (got {self.max_tokens})")
        if self.temperature < 0:
            raise UserError(f"--temperature must be 0 or more (got {self.temperature})")
        if self.top_k is not None and self.top_k < 1:
            raise UserError(f"--top-k must be at least 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be above 0 and at most 1 (got {self.top_p})")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise UserError(f"--seed must be between 0 and 2**63 - 1 (got {self.seed})")
        if self.num_samples < 1:
            raise UserError(f"--num-samples must be at least 1 (got {self.num_samples})")

    def rules(self, banned: list[int]) -> list[LogitsRule]:
        rules: list[LogitsRule] = [BanTokens(banned)] if banned else []
        if self.temperature > 0:
            rules.append(Temperature(self.temperature))
        if self.top_k is not None:
            rules.append(TopK(self.top_k))
        if self.top_p is not None:
            rules.append(TopP(self.top_p))
        return rules


@torch.inference_mode()  # like no_grad, minus the version-counter bookkeeping per op
def generate(model: GPT, prompt: list[int], options: SamplingOptions,
             banned: list[int] | None = None) -> Iterator[torch.Tensor]:
    """Yield the next token of every sample, (num_samples,), `max_tokens` times."""
    options.check()
    if not prompt:
        raise UserError("the prompt must hold at least one token")
    device = model.embed.weight.device
    context = model.cfg.context_length
    generator = torch.Generator(device)
    if options.seed is None:
        generator.seed()  # fresh entropy, without touching torch's global generator
    else:
        generator.manual_seed(options.seed)
    rules = options.rules(banned or [])
    text = torch.tensor([prompt], device=device).repeat(options.num_samples, 1)  # (B, P)
    cache = model.new_cache(options.num_samples) if options.use_cache else None
    logits = model(text[:, -context:], cache=cache)[:, -1].float()  # (B, V)
    for i in range(options.max_tokens):
        for rule in rules:
            logits = rule(logits)
        if options.temperature == 0:
            token = logits.argmax(dim=-1)  # (B,)
        else:
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)  # (B,)
        yield token
        if i == options.max_tokens - 1:
            break
        text = torch.cat([text, token[:, None]], dim=1)  # (B, n + 1)
        if cache is None:  # no cache: the whole (latest) context again
            logits = model(text[:, -context:])[:, -1].float()
        elif cache.length == context:  # full: restart from the most recent half
            cache.reset()
            logits = model(text[:, -max(1, context // 2):], cache=cache)[:, -1].float()
        else:
            logits = model(token[:, None], cache=cache)[:, -1].float()
