"""Conversations: the chat template, the records that hold them, packing whole ones into
windows, and a loss on the assistant's tokens only."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fundamentallm.config.schema import DataConfig
from fundamentallm.data.batching import IGNORE_INDEX, PackedSampler
from fundamentallm.data.chat import conversation_tokens, read_conversations
from fundamentallm.errors import UserError
from fundamentallm.model import GPT
from fundamentallm.tokenizers import END_OF_TURN, ROLE_TOKENS, build_tokenizer
from fundamentallm.tokenizers.chat import ChatTemplate
from fundamentallm.training.loop import step_targets

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Bye!"}]


@pytest.fixture(scope="module", params=["char", "byte", "bpe"])
def tokenizer(request):
    return build_tokenizer(request.param, "Be brief. Hi there Hello. Bye Bye! what now? " * 20, 300)


def test_the_template_renders_turns_and_trains_the_assistants_tokens(tokenizer):
    template = ChatTemplate(tokenizer)
    ids, trained = template.render(CONVERSATION)
    turn = tokenizer.special_id
    expected = []
    for message in CONVERSATION:
        expected += [turn(ROLE_TOKENS[message["role"]]), *tokenizer.encode(message["content"]), turn(END_OF_TURN)]
    assert ids == expected
    scored = [i for i, t in zip(ids, trained) if t]
    replies = [*tokenizer.encode("Hello."), turn(END_OF_TURN), *tokenizer.encode("Bye!"), turn(END_OF_TURN)]
    assert scored == replies  # the replies and the end of each: nothing of the system's or the user's
    assert all(template.render(CONVERSATION, train_on="all")[1])
    assert template.prompt(CONVERSATION[:2]) == expected[:len(template.render(CONVERSATION[:2])[0])] + [
        turn(ROLE_TOKENS["assistant"])]


@pytest.mark.parametrize("record, message", [
    ('{"messages": "hi"}', "3: 'messages' must be a non-empty list"),
    ('{"text": "hi"}', "3: a chat record needs a 'messages' list"),
    ('{"messages": [{"role": "tool", "content": "x"}]}', "3: message 1: role 'tool'; use one of system, user"),
    ('{"messages": [{"role": "user", "content": 3}]}', "3: message 1: 'content' must be a string"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "3: the conversation has no assistant message"),
    ('{"messages": [', "3: not valid JSON"),
])
def test_a_bad_record_is_one_error_naming_its_line(tmp_path, record, message):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": CONVERSATION}) + "\n\n" + record + "\n")
    with pytest.raises(UserError, match=message) as error:
        read_conversations(path)
    assert str(error.value).startswith(f"{path}:3: ") and "\n" not in str(error.value)


def packed(tokenizer, conversations, context=24, batch=2, accum=1, **data):
    cfg = dataclasses.replace(DataConfig(format="chat", val_split=0), **data)
    file = Path(tempfile.mkdtemp()) / "chats.jsonl"
    file.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations))
    chats = conversation_tokens(cfg, [file], [], tokenizer)
    return chats, PackedSampler(chats.train, chats.train_mask, tokenizer.eos_id, context_length=context,
                                batch_size=batch, grad_accum_steps=accum, seed=1, unk_id=tokenizer.unk_id)


def test_windows_start_at_a_conversation_and_score_only_the_assistant(tokenizer):
    short = [CONVERSATION[1:3], CONVERSATION[3:5], [{"role": "user", "content": "what now?"},
                                                    {"role": "assistant", "content": "Bye"}]]
    chats, sampler = packed(tokenizer, short * 3, context=64)
    starts = {tokenizer.special_id(ROLE_TOKENS["user"])}
    trained_targets = set(np.asarray(chats.train)[chats.train_mask].tolist())
    for index in range(sampler.micro_per_epoch):
        x, y = sampler.batch_at(0, index)
        assert set(x[:, 0].tolist()) <= starts  # every window opens a conversation
        assert set(y[y != IGNORE_INDEX].tolist()) <= trained_targets
        assert (y != IGNORE_INDEX).any()
    assert sampler.truncated == 0
    x0, y0 = sampler.batch_at(3, 0)
    x1, y1 = sampler.batch_at(3, 0)  # a pure function of (seed, epoch, index)
    assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_a_conversation_longer_than_the_window_is_cut_and_counted(tokenizer):
    long = [{"role": "user", "content": "Hi there " * 10}, {"role": "assistant", "content": "Hello. " * 10}]
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Bye"}]
    _, sampler = packed(tokenizer, [long, short], context=16, batch=1)
    assert sampler.truncated == 1


def test_the_users_and_systems_tokens_get_no_gradient(tokenizer, tiny_model_config):
    chats, sampler = packed(tokenizer, [CONVERSATION] * 4, context=48)
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(tiny_model_config, vocab_size=tokenizer.vocab_size, context_length=48))
    x, y = sampler.batch_at(0, 0)
    logits_seen = []

    def keep(module, inputs, out):
        out.retain_grad()
        logits_seen.append(out)
    model.head.register_forward_hook(keep)
    model(x, y, reduction="sum").backward()
    grad = logits_seen[0].grad  # (B, T, V)
    context_rows = y == IGNORE_INDEX  # targets of the system's and user's tokens, turn tokens, padding
    assert context_rows.any() and (~context_rows).any()
    assert grad[context_rows].abs().max() == 0
    assert grad[~context_rows].abs().sum(-1).min() > 0


def test_a_micro_batch_with_nothing_to_train_adds_nothing_and_no_nan(tokenizer, tiny_model_config):
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(tiny_model_config, vocab_size=tokenizer.vocab_size))
    x = torch.randint(0, tokenizer.base_size, (2, 8))
    scored = x.roll(-1, dims=1)
    nothing = torch.full_like(x, IGNORE_INDEX)
    assert torch.isnan(model(x, nothing))  # a plain mean over no target: why the step divides by its count
    # two micro-batches of one step, the second with no target: the loop's arithmetic
    sampler = SimpleNamespace(step_targets=lambda epoch, micro, accum: int(scored.numel()))
    run = SimpleNamespace(sampler=sampler, state=SimpleNamespace(epoch=0, micro_batch=0), device=torch.device("cpu"),
                          cluster=SimpleNamespace(sum=lambda t: t, world_size=1))
    targets = step_targets(run, 2)
    step = model(x, scored, reduction="sum") / targets + model(x, nothing, reduction="sum") / targets
    assert torch.isfinite(step)
    assert step.item() == pytest.approx(model(x, scored).item(), rel=1e-6)  # the mean over the step's targets
