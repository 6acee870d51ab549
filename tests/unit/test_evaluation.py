"""evaluate(): the loss over every token once, against an independent brute-force computation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from fundamentallm.errors import UserError
from fundamentallm.evaluation import evaluate
from fundamentallm.scoring import total_loss
from fundamentallm.model import GPT
from fundamentallm.tokenizers import ByteTokenizer, CharTokenizer
from helpers import figures

TRAIN_TEXT = "the quick brown fox jumps over the lazy dog.\n"
EVAL_TEXT = "a lazy dog sleeps; the brown fox jumps over it. then the fox runs home.\n" * 2
UNKNOWN_CHARS = ";"  # in EVAL_TEXT but not TRAIN_TEXT


@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer.train(TRAIN_TEXT + "ailnpst")  # everything in EVAL_TEXT but ';'


@pytest.fixture
def model(tiny_model_config, tok) -> GPT:
    torch.manual_seed(0)
    return GPT(dataclasses.replace(tiny_model_config, vocab_size=tok.vocab_size)).eval()


def brute_force_loss(model: GPT, ids: list[int], unk_id: int) -> tuple[float, int]:
    """Mean cross entropy over consecutive non-overlapping windows, one window at a time."""
    context = model.cfg.context_length
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, context):
            inputs = ids[start:start + context]
            targets = ids[start + 1:start + 1 + context]
            inputs = inputs[:len(targets)]
            logits = model(torch.tensor([inputs]))[0]
            for logit, target in zip(logits, targets):
                if target != unk_id:
                    total += F.cross_entropy(logit[None].double(), torch.tensor([target])).item()
                    count += 1
    return total / count, count


def test_metrics_are_consistent(model, tok):
    text = EVAL_TEXT.replace(UNKNOWN_CHARS, " ")
    score = evaluate(model, tok, text, batch_size=4)
    assert score.tokens == len(text) - 1
    assert score.unknown == 0
    assert score.perplexity == pytest.approx(math.exp(score.loss))
    assert score.bits_per_char == pytest.approx(score.loss / math.log(2))  # one token, one char
    assert score.characters == len(text) - 1 and score.bytes == len(text.encode()) - 1
    assert set(score.to_dict()) == {"loss", "perplexity", "bits_per_char", "bits_per_byte", "tokens",
                                    "characters", "bytes", "unknown", "precision", "seconds"}


def test_loss_equals_brute_force_mean(model, tok):
    text = EVAL_TEXT.replace(UNKNOWN_CHARS, " ")
    ids = tok.encode(text)
    assert (len(ids) - 1) % model.cfg.context_length != 0  # a short last window is included
    expected, count = brute_force_loss(model, ids, tok.unk_id)
    score = evaluate(model, tok, text, batch_size=3)
    assert score.tokens == count
    assert score.loss == pytest.approx(expected, rel=1e-5)


def test_batch_size_does_not_change_the_result(model, tok):
    a = evaluate(model, tok, EVAL_TEXT, batch_size=1)
    b = evaluate(model, tok, EVAL_TEXT, batch_size=64)
    assert a.tokens == b.tokens
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_unknown_characters_are_counted_not_scored(model, tok):
    ids = tok.encode(EVAL_TEXT)
    n_unknown = EVAL_TEXT.count(UNKNOWN_CHARS)
    assert n_unknown == 2 and ids.count(tok.unk_id) == n_unknown and ids[0] != tok.unk_id
    expected, count = brute_force_loss(model, ids, tok.unk_id)
    score = evaluate(model, tok, EVAL_TEXT, batch_size=4)
    assert score.unknown == n_unknown
    assert score.tokens == len(ids) - 1 - n_unknown == count
    assert score.loss == pytest.approx(expected, rel=1e-5)


def test_training_mode_is_restored(model, tok):
    model.train()
    evaluate(model, tok, "the fox", batch_size=4)
    assert model.training


def test_too_short_or_all_unknown_text_is_a_user_error(model, tok):
    with pytest.raises(UserError, match="at least 2 tokens"):
        evaluate(model, tok, "a", batch_size=4)
    with pytest.raises(UserError, match="no token"):
        evaluate(model, tok, "a;;;", batch_size=4)


def test_bits_per_char_and_byte_divide_the_same_information_by_what_was_predicted(tiny_model_config):
    """A byte model on text with two-byte characters: per byte, per character and per token
    figures all come from one total of nats."""
    tok = ByteTokenizer()
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(tiny_model_config, vocab_size=256)).eval()
    text = "café crème, déjà vu. " * 3
    score = evaluate(model, tok, text, batch_size=4)
    ids = tok.encode(text)
    expected, count = brute_force_loss(model, ids, unk_id=-1)
    total_bits = expected * count / math.log(2)
    assert score.tokens == count == len(text.encode()) - 1
    assert score.bytes == len(text.encode()) - 1  # the first byte ("c") is not predicted
    assert score.characters == len(text) - 1
    assert score.bits_per_byte == pytest.approx(total_bits / score.bytes, rel=1e-5)
    assert score.bits_per_char == pytest.approx(total_bits / score.characters, rel=1e-5)
    assert score.bits_per_char > score.bits_per_byte  # more bytes than characters


def test_unknown_characters_count_neither_as_characters_nor_bytes(model, tok):
    score = evaluate(model, tok, EVAL_TEXT, batch_size=4)
    assert score.characters == len(EVAL_TEXT) - 1 - 2
    assert score.bytes == len(EVAL_TEXT.encode()) - 1 - 2


@pytest.mark.parametrize("count", [2, 3])
@pytest.mark.parametrize("max_windows", [None, 7])
def test_sharded_scoring_adds_up_to_the_whole(tiny_model, count, max_windows):
    """Each of `count` processes scores its share of the windows; their sums are the
    single-process totals, and every process runs the same number of forward passes."""
    from fundamentallm.scoring import Shard

    ids = torch.randint(0, tiny_model.cfg.vocab_size, (613,), generator=torch.Generator().manual_seed(0))
    whole = total_loss(tiny_model, ids, 3, None, max_windows)
    parts, passes = [], []
    for rank in range(count):
        calls = []
        handle = tiny_model.register_forward_hook(lambda *_: calls.append(1))
        parts.append(total_loss(tiny_model, ids, 3, None, max_windows, shard=Shard(rank, count, lambda t: t)))
        handle.remove()
        passes.append(len(calls))
    assert sum(p[0] for p in parts) == pytest.approx(whole[0], rel=1e-6)  # fp32 sums per batch
    assert sum(p[1] for p in parts) == whole[1] and sum(p[2] for p in parts) == whole[2]
    assert len(set(passes)) == 1  # in step: a sharded model gathers its weights in every pass


def test_progress_counts_every_window_once(model, tok):
    text = "hello world, " * 40
    seen = []
    score = evaluate(model, tok, text, batch_size=3, progress=lambda done, total: seen.append((done, total)))
    total = seen[0][1]
    assert [done for done, _ in seen] == sorted({done for done, _ in seen})  # rising, one call per pass
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)
    assert len(seen) >= -(-total // 3) >= 2  # one call per forward pass (a shorter last window: its own)
    again = evaluate(model, tok, text, batch_size=3)
    assert figures(score.to_dict()) == figures(again.to_dict())  # watching changes nothing


def test_precision_is_chosen_and_reported(model, tok):
    text = "hello world, " * 20
    fp32, bf16 = (evaluate(model, tok, text, batch_size=4, precision=p) for p in ("fp32", "bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.loss == pytest.approx(fp32.loss, abs=0.02) and bf16.loss != fp32.loss  # computed in bf16
