"""Generating text: KV-cached decoding, sampling, beam search and stop strings.

Three layers, each usable on its own:
- `Decoder` feeds tokens to the model and returns next-token logits. Its KV cache holds at
  most `context_length` positions; when full it restarts from the most recent half of the
  text, so any length can be generated at an amortised cost far below recomputing the
  whole context for every token.
- `generate` (token ids in, token ids out) samples all samples of a batch together, one
  forward pass per step; `beam_search` keeps the `beam_width` most likely continuations.
- `TextGenerator` (text in, text out) adds the tokenizer: prompt encoding, `--ban` text, stop
  strings, streaming text and per-sample figures. The CLI, the REPL and the server all
  call it, so every option means the same everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.sampling import SamplingOptions, logits_rules
from fundamentallm.tokenizers import RESERVED, StreamDecoder, Tokenizer
from fundamentallm.tokenizers.chat import ChatTemplate

__all__ = ["Completion", "Decoder", "SamplingOptions", "TextGenerator", "beam_search", "generate"]


class Decoder:
    """The text so far (B, n) and the model's logits for the next token (B, V)."""

    def __init__(self, model: GPT, prompt: torch.Tensor, use_cache: bool = True):
        self.model, self.context = model, model.cfg.context_length
        self.text = prompt  # (B, P)
        self.cache = model.new_cache(prompt.shape[0]) if use_cache else None
        self.logits = self.model(self.text[:, -self.context:], cache=self.cache)[:, -1].float()

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Append token (B,); return the logits for the one after it (B, V)."""
        self.text = torch.cat([self.text, token[:, None]], dim=1)  # (B, n + 1)
        if self.cache is None:  # no cache: the whole (latest) context again
            logits = self.model(self.text[:, -self.context:])
        elif self.cache.length == self.context:  # full: restart from the most recent half
            self.cache.reset()
            logits = self.model(self.text[:, -max(1, self.context // 2):], cache=self.cache)
        else:
            logits = self.model(token[:, None], cache=self.cache)
        self.logits = logits[:, -1].float()
        return self.logits

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the sequences `index` (B,), e.g. the beams chosen to extend."""
        self.text, self.logits = self.text[index], self.logits[index]
        if self.cache is not None:
            self.cache.reorder(index)


def _start(model: GPT, prompt: list[int], batch: int, options: SamplingOptions):
    options.check()
    if not prompt:
        raise UserError("the prompt must hold at least one token")
    device = model.embed.weight.device
    ids = torch.tensor([prompt], device=device).repeat(batch, 1)  # (B, P)
    counts = torch.zeros(batch, model.cfg.vocab_size, device=device)  # each sample's token counts
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))
    return Decoder(model, ids, options.use_cache), counts


@torch.inference_mode()  # like no_grad, minus the version-counter bookkeeping per op
def generate(model: GPT, prompt: list[int], options: SamplingOptions,
             banned: list[int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield (tokens, their log-probabilities, every token's log-probability) of every
    sample, shaped (B,), (B,) and (B, V), up to `max_tokens` times. Log-probabilities are
    the model's own (before any sampling rule)."""
    decoder, counts = _start(model, prompt, options.num_samples, options)
    rules = logits_rules(options, banned or [])
    generator = torch.Generator(decoder.text.device)
    if options.seed is None:
        generator.seed()  # fresh entropy, without touching torch's global generator
    else:
        generator.manual_seed(options.seed)
    rows = torch.arange(options.num_samples, device=decoder.text.device)
    for i in range(options.max_tokens):
        logits = decoder.logits.clone()
        for rule in rules:
            logits = rule(logits, counts)
        if options.is_greedy:
            token = logits.argmax(dim=-1)  # (B,)
        else:
            token = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)  # (B,)
        logprobs = decoder.logits.log_softmax(-1)  # (B, V)
        yield token, logprobs[rows, token], logprobs
        if i == options.max_tokens - 1:
            break
        counts[rows, token] += 1
        decoder.step(token)


@torch.inference_mode()
def beam_search(model: GPT, prompt: list[int], options: SamplingOptions, banned: list[int] | None = None,
                stop_at=lambda ids: None) -> tuple[list[int], float]:
    """The most likely continuation found by a beam of `beam_width`; (ids, sum of log-probs).

    Beams are ranked by total log-probability; finished ones (cut by `stop_at(ids)`, which
    returns how many ids to keep when a stop string appears, or by `max_tokens`) by total /
    length^length_penalty, so a penalty above 0 stops short beams from winning by default.
    Width 1 is greedy decoding.
    """
    width = options.beam_width
    if width > model.cfg.vocab_size:
        raise UserError(f"--beam-width {width} is more than the model's {model.cfg.vocab_size} tokens")
    decoder, counts = _start(model, prompt, width, options)
    rules = logits_rules(options, banned or [], sampling=False)
    device = decoder.text.device
    scores = torch.full((width,), float("-inf"), device=device)
    scores[0] = 0.0  # all beams start as the same prompt: expand only the first
    beams = torch.zeros(width, 0, dtype=torch.long, device=device)  # generated ids (K, t)
    finished: list[tuple[float, list[int], float]] = []

    def rank(ids: list[int], total: float) -> float:
        return total / max(1, len(ids)) ** options.length_penalty

    for step in range(options.max_tokens):
        logits = decoder.logits.clone()
        for rule in rules:
            logits = rule(logits, counts)
        candidates = scores[:, None] + logits.log_softmax(-1)  # (K, V)
        values, flat = candidates.flatten().topk(width)
        if not torch.isfinite(values[0]):
            break  # every beam finished
        beam, token = flat // logits.shape[1], flat % logits.shape[1]
        decoder.reorder(beam)
        beams = torch.cat([beams[beam], token[:, None]], dim=1)
        counts = counts[beam]
        counts[torch.arange(width, device=device), token] += 1
        scores = values.clone()
        for k in range(width):
            if not torch.isfinite(scores[k]):
                continue
            keep = stop_at(beams[k].tolist())
            if keep is not None:
                finished.append((rank(beams[k, :keep].tolist(), float(scores[k])),
                                 beams[k, :keep].tolist(), float(scores[k])))
                scores[k] = float("-inf")  # a finished beam is not extended
        if step < options.max_tokens - 1:
            decoder.step(token)
    for k in range(width):
        if torch.isfinite(scores[k]):
            finished.append((rank(beams[k].tolist(), float(scores[k])), beams[k].tolist(), float(scores[k])))
    _, ids, total = max(finished, key=lambda f: f[0]) if finished else (0.0, [], 0.0)
    return ids, total


@dataclass
class Completion:
    """One sample's result."""

    text: str
    tokens: int
    mean_logprob: float  # mean log-probability per generated token, under the model
    tokens_per_s: float
    stop_reason: str  # "stop" (a stop string) or "length" (max_tokens)
    # Per generated token, when asked for (`alternatives`): its text, its log-probability and
    # the most likely tokens at that step (text → log-probability).
    token_texts: list[str] = field(default_factory=list)
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "mean_logprob": round(self.mean_logprob, 4),
                "tokens_per_s": round(self.tokens_per_s, 1), "stop_reason": self.stop_reason}


class StopScanner:
    """Cuts one sample's text at the first stop string, holding back any tail that could
    be the start of one, so streamed text never shows part of a stop string."""

    def __init__(self, stops: list[str]):
        self.stops, self.pending, self.done = [s for s in stops if s], "", False

    def feed(self, text: str) -> str:
        """New text in; the text that is safe to show out."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.done = self.pending[:min(hits)], "", True
            return out
        hold = max((n for s in self.stops for n in range(1, len(s)) if self.pending.endswith(s[:n])),
                   default=0)
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class TextGenerator:
    """Text generation from a trained model: prompt text in, completions (or a stream) out."""

    def __init__(self, model: GPT, tokenizer: Tokenizer, chat: bool = False, ends: bool = False):
        """`chat`: the model was fine-tuned on conversations; its chat template is `template`.
        `ends`: its documents ended with the end-of-text token, so it knows where a text ends
        and generation stops there; otherwise that token was never a target, and it is never
        written (a model of one running text goes on until max_tokens, as it always did)."""
        self.model, self.tokenizer = model, tokenizer
        self.template = ChatTemplate(tokenizer) if chat else None
        self.ends = ends or chat
        self._token_texts: list[str] | None = None

    def encode_prompt(self, prompt: str) -> tuple[list[int], int]:
        """Prompt ids, and how many characters were unknown to the model (<unk>)."""
        ids = self.tokenizer.encode(prompt)
        unk = self.tokenizer.unk_id
        return ids, (ids.count(unk) if unk is not None else 0)

    def banned_ids(self, ban: list[str], stops: set[int] = frozenset()) -> list[int]:
        """<unk>, padding rows, the reserved special tokens that do not end this text (a chat
        turn token in the middle of a text or a reply would be structure, not text), and for
        each --ban text: every token holding that character, or the one token spelled exactly so."""
        if self._token_texts is None and ban:
            self._token_texts = [self.tokenizer.decode([i]) for i in range(self.tokenizer.vocab_size)]
        banned = {self.tokenizer.unk_id} if self.tokenizer.unk_id is not None else set()
        banned.update(i for text in RESERVED if (i := self.tokenizer.special_id(text)) is not None
                      and i not in stops and i < self.model.cfg.vocab_size)
        # rows of a padded vocabulary (an imported model's) that no token of the tokenizer has
        banned.update(range(self.tokenizer.vocab_size, self.model.cfg.vocab_size))
        for text in ban:
            if len(text) == 1:
                banned.update(i for i, t in enumerate(self._token_texts) if text in t)
            elif text in self._token_texts:
                banned.add(self._token_texts.index(text))
            else:
                raise UserError(f"--ban {text!r}: neither one character nor one token of this model")
        return sorted(banned)

    def stop_ids(self) -> list[int]:
        """The tokens that end a text: the end-of-text token, for a model that learnt to write it."""
        return [self.tokenizer.eos_id] if self.ends and self.tokenizer.eos_id is not None else []

    def stream(self, prompt: str | list[int], options: SamplingOptions, alternatives: int | None = None,
               stop_ids: list[int] | None = None) -> Iterator[tuple[int, str] | list[Completion]]:
        """Yield (sample, new text) as it is generated, then the list of completions. With
        `alternatives` k (0 or more), each completion also lists its tokens, their
        log-probabilities and the k most likely tokens at each step. `prompt`: text, or ids
        (a chat template's); generation ends at a token of `stop_ids` (default: the end of
        text), which is not shown."""
        ids = self.encode_prompt(prompt)[0] if isinstance(prompt, str) else list(prompt)
        stops = set(self.stop_ids() if stop_ids is None else stop_ids)
        banned = self.banned_ids(options.ban, stops)
        start = time.perf_counter()
        if options.beam_width > 1:
            if alternatives is not None:
                raise UserError("per-token log-probabilities are not available with beam search")
            yield from self._beam(ids, options, banned, start, stops)
            return
        n = options.num_samples
        decoders = [StreamDecoder(self.tokenizer) for _ in range(n)]
        scanners = [StopScanner(options.stop) for _ in range(n)]
        texts, tokens, logprob = [""] * n, [0] * n, [0.0] * n
        ended = [0.0] * n
        details = [Completion("", 0, 0.0, 0.0, "") for _ in range(n)]  # per-token lists only
        for step_tokens, step_logprobs, distribution in generate(self.model, ids, options, banned):
            if alternatives:
                top_values, top_ids = distribution.topk(min(alternatives, distribution.shape[1]), dim=-1)
            for i, (token, lp) in enumerate(zip(step_tokens.tolist(), step_logprobs.tolist())):
                if scanners[i].done:
                    continue
                tokens[i] += 1
                logprob[i] += lp
                if alternatives is not None:
                    details[i].token_texts.append(self.tokenizer.decode([token]))
                    details[i].token_logprobs.append(round(lp, 6))
                    details[i].top_logprobs.append({} if not alternatives else {
                        self.tokenizer.decode([t]): round(v, 6)
                        for t, v in zip(top_ids[i].tolist(), top_values[i].tolist())})
                if token in stops:  # the text is over: the stop token itself is no text
                    new = scanners[i].feed(decoders[i].flush())
                    new += "" if scanners[i].done else scanners[i].flush()
                    scanners[i].done = True
                else:
                    new = scanners[i].feed(decoders[i].push(token))
                if scanners[i].done:
                    ended[i] = time.perf_counter() - start
                if new:
                    texts[i] += new
                    yield i, new
            if all(s.done for s in scanners):
                break
        elapsed = time.perf_counter() - start
        for i in range(n):
            if not scanners[i].done:
                new = scanners[i].feed(decoders[i].flush())
                new += "" if scanners[i].done else scanners[i].flush()
                if new:
                    texts[i] += new
                    yield i, new
        yield [Completion(texts[i], tokens[i], logprob[i] / max(1, tokens[i]),
                          tokens[i] / max(ended[i] or elapsed, 1e-9),
                          "stop" if scanners[i].done else "length", details[i].token_texts,
                          details[i].token_logprobs, details[i].top_logprobs) for i in range(n)]

    def _beam(self, ids: list[int], options: SamplingOptions, banned: list[int], start: float, stops: set[int]):
        def stop_at(generated: list[int]) -> int | None:
            if generated and generated[-1] in stops:
                return len(generated) - 1
            if not options.stop:
                return None
            scanner = StopScanner(options.stop)
            scanner.feed(self.tokenizer.decode(generated))
            return len(generated) if scanner.done else None

        best, total = beam_search(self.model, ids, options, banned, stop_at)
        scanner = StopScanner(options.stop)
        text = scanner.feed(StreamDecoder(self.tokenizer).decode(best))
        text += "" if scanner.done else scanner.flush()
        yield 0, text
        yield [Completion(text, len(best), total / max(1, len(best)),
                          len(best) / max(time.perf_counter() - start, 1e-9),
                          "stop" if scanner.done else "length")]

    def complete(self, prompt: str | list[int], options: SamplingOptions,
                 stop_ids: list[int] | None = None) -> list[Completion]:
        """Generate and return the completions (no streaming)."""
        for event in self.stream(prompt, options, stop_ids=stop_ids):
            if isinstance(event, list):
                return event
        raise AssertionError("stream ended without completions")  # pragma: no cover
