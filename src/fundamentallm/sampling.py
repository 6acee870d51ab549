"""Sampling controls: which token comes next, given the model's logits and the text so far.

`SamplingOptions` is the one list of controls: `generate` flags, the interactive REPL's
`/set` and the server's JSON are all read into it, with the same names and checks. The
next-token distribution passes through a chain of logits rules built once from the
options; a new control is one new rule class. The order follows common practice (Hugging
Face's logits processors): penalties on the raw logits, bans, then temperature, then the
truncations (top-k, top-p, min-p), then sampling.

Every rule maps logits (B, V) and the token counts of each sample's text so far (B, V)
to new logits; -inf removes a token.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from fundamentallm.config.loading import class_fields, coerce
from fundamentallm.config.schema import option
from fundamentallm.errors import UserError


@dataclass
class SamplingOptions:
    max_tokens: int = option(200, "tokens to generate", aliases=("--max-length",), check="non_negative",
                             at_most=1_000_000)
    temperature: float = option(0.8, "below 1 sharpens the distribution, above 1 flattens it; 0 is greedy",
                                check="temperature")
    top_k: int | None = option(None, "sample from the k most likely tokens", check="positive")
    top_p: float | None = option(None, "sample from the smallest set of tokens whose probability reaches p",
                                 check="probability")
    min_p: float | None = option(None, "drop tokens less likely than min-p x the most likely one",
                                 check="probability")
    repetition_penalty: float = option(
        1.0, "divide the logit of every token already in the text by this (above 1 repeats less)",
        check="divisor")
    frequency_penalty: float = option(0.0, "subtract this x the times a token already occurs", check="penalty")
    presence_penalty: float = option(0.0, "subtract this once from every token that already occurs",
                                     check="penalty")
    stop: list[str] = option([], "stop a sample where this text appears (repeatable); it is not output")
    ban: list[str] = option([], "never produce this text: a character, or a whole token (repeatable)")
    greedy: bool = option(False, "always take the most likely token (same as --temperature 0)")
    beam_width: int = option(1, "beam search with this many beams (1: sampling)", check="positive", at_most=1024)
    length_penalty: float = option(
        1.0, "beam search: rank finished beams by log-probability / length^this", check="non_negative",
        at_most=1e4)
    num_samples: int = option(1, "independent samples, generated together in one batch", check="positive",
                              at_most=4096)
    seed: int | None = option(None, "same seed, same text", check="seed")
    use_cache: bool = option(True, "reuse past keys and values (off: recompute the context per token)",
                             flag=None)

    def check(self) -> None:
        """Each field's own check, and the combinations that make no sense."""
        for info in class_fields(SamplingOptions):
            coerce(info, getattr(self, info.name), info.flag or info.name)
        if self.beam_width > 1 and self.num_samples > 1:
            raise UserError("--beam-width returns the best beam; it cannot be combined with --num-samples")

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def updated(self, values: dict[str, Any], source: str | None = None) -> "SamplingOptions":
        """A copy with `values` (name -> value, e.g. parsed JSON) applied and checked.
        Unknown names and bad values are errors that name the option: by its flag, or as
        `source: name` when the values came from elsewhere (a REPL command, a request)."""
        known = {info.name: info for info in class_fields(SamplingOptions) if info.flag is not None}
        changes = {}
        for name, value in values.items():
            info = known.get(name.replace("-", "_"))
            if info is None:
                raise UserError(f"{source + ': ' if source else ''}unknown option {name!r} "
                                f"(options: {', '.join(known)})")
            changes[info.name] = coerce(info, value, info.flag if source is None else f"{source}: {info.name}")
        result = dataclasses.replace(self, **changes)
        result.check()
        return result

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class LogitsRule(Protocol):
    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """logits (B, V), counts (B, V) → logits (B, V)."""


class RepetitionPenalty:
    """CTRL (Keskar et al. 2019): a token already in the text has its logit divided by the
    penalty if positive, multiplied if negative, so it always becomes less likely."""

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        penalized = torch.where(logits > 0, logits / self.penalty, logits * self.penalty)
        return torch.where(counts > 0, penalized, logits)


class FrequencyPresencePenalty:
    """OpenAI-style penalties: subtract frequency x count and presence x [count > 0]."""

    def __init__(self, frequency: float, presence: float):
        self.frequency, self.presence = frequency, presence

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return logits - self.frequency * counts - self.presence * (counts > 0).to(logits.dtype)


class BanTokens:
    def __init__(self, ids: list[int]):
        self.ids = ids

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        logits[:, self.ids] = float("-inf")
        return logits


class Temperature:
    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return logits / self.temperature


class TopK:
    """Keeps the k most likely tokens (Fan et al. 2018)."""

    def __init__(self, k: int):
        self.k = k

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        kth = torch.topk(logits, min(self.k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, float("-inf"))


class TopP:
    """Nucleus sampling (Holtzman et al. 2020): the smallest set of tokens whose
    probabilities add up to at least p."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)  # (B, V) each
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        dropped = before >= self.p  # (B, V)
        dropped[..., 0] = False  # the top token always stays (rounding may put `before` above a tiny p)
        sorted_logits[dropped] = float("-inf")
        return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class MinP:
    """Min-p sampling (Nguyen et al. 2024): keep tokens at least min_p x as likely as the
    most likely one, a cut that adapts to how confident the model is."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        probs = logits.softmax(dim=-1)
        floor = self.p * probs.max(dim=-1, keepdim=True).values  # (B, 1)
        return logits.masked_fill(probs < floor, float("-inf"))


def logits_rules(options: SamplingOptions, banned: list[int], sampling: bool = True) -> list[LogitsRule]:
    """The chain for `options`. Greedy decoding and beam search (`sampling` False, or greedy
    options) use only the penalties and bans: the rest reshape a distribution to sample
    from, and never change which token is most likely."""
    rules: list[LogitsRule] = []
    if options.repetition_penalty != 1.0:
        rules.append(RepetitionPenalty(options.repetition_penalty))
    if options.frequency_penalty or options.presence_penalty:
        rules.append(FrequencyPresencePenalty(options.frequency_penalty, options.presence_penalty))
    if banned:
        rules.append(BanTokens(banned))
    if options.is_greedy or not sampling:
        return rules
    rules.append(Temperature(options.temperature))
    if options.top_k is not None:
        rules.append(TopK(options.top_k))
    if options.top_p is not None:
        rules.append(TopP(options.top_p))
    if options.min_p is not None:
        rules.append(MinP(options.min_p))
    return rules
