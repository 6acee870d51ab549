"""Documents and conversations through the real CLI: end-of-text boundaries, --doc-mask,
chat fine-tuning with the loss on the assistant's turns, one template in training, the
server, `interactive --chat` and the export (transformers' apply_chat_template), and an
export that lm-evaluation-harness runs with no extra arguments."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fundamentallm.checkpoint import load_checkpoint, load_model
from fundamentallm.sampling import SamplingOptions
from fundamentallm.tokenizers import END_OF_TURN, EOS, ROLE_TOKENS
from fundamentallm.tokenizers.chat import ChatTemplate
from helpers import ROOT, process_env
from integration_helpers import (
    TINY_SHAPE, assert_one_line_error, losses, run_cli, run_process, sample_text, tiny_args, train,
)

CHAT_SHAPE = {"context_length": 96}  # a question about a line and its answer fit in a window


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> Path:
    """The chat task of scripts/make_chat_data.py, from the sample text."""
    directory = tmp_path_factory.mktemp("chats")
    (directory / "text.txt").write_text(sample_text(40_000), encoding="utf-8")
    subprocess.run([sys.executable, str(ROOT / "scripts/make_chat_data.py"), directory / "text.txt", directory,
                    "--questions", "200", "--test-questions", "20"], check=True, capture_output=True,
                   env=process_env())
    return directory


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("base")
    (directory / "text.txt").write_text(sample_text(20_000), encoding="utf-8")
    return train(directory / "text.txt", directory / "run", **CHAT_SHAPE) / "final.pt"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, chats, base) -> Path:
    out = tmp_path_factory.mktemp("chat") / "run"
    return train(chats / "train.jsonl", out, "--format", "chat", "--init-from", base, max_steps=6,
                 **CHAT_SHAPE) / "final.pt"


# ---------------------------------------------------------------- documents
def test_records_end_with_the_end_of_text_token_and_generation_stops_there(tmp_path, capsys):
    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"text": "abcdefghij"}) + "\n" for _ in range(200)))
    out = train(records, tmp_path / "run", "--json", quiet=False, max_steps=60, learning_rate=0.01,
                warmup_steps=5, context_length=32, val_split=0)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["documents"] == "each ends with <|endoftext|> (records: --doc-boundary auto)"
    # every document is "abcdefghij" then the end of text: after "j" the model stops
    assert run_cli("generate", out / "final.pt", "--prompt", "abcdef", "--greedy", "--max-tokens", "20",
                   "--json") == 0
    sample = json.loads(capsys.readouterr().out)["samples"][0]
    assert sample["stop_reason"] == "stop" and sample["text"] == "ghij" and sample["tokens"] == 5


def test_a_doc_separator_cuts_one_file_into_documents(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n=====\n".join(sample_text(9_000)[i:i + 3_000] for i in range(0, 9_000, 3_000)))
    train(text, tmp_path / "run", "--json", "--doc-separator", "\\n=====\\n", quiet=False, val_split=0)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["train tokens"] == 9_000 + 3  # the separators gone, three ends of text in their place
    assert "--doc-separator: --doc-boundary auto" in start["documents"]
    train(text, tmp_path / "one", "--json", quiet=False, val_split=0)
    assert json.loads(capsys.readouterr().out.splitlines()[0])["documents"].startswith("one running text")


def test_doc_mask_trains_and_without_it_the_losses_are_unchanged(tmp_path):
    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"text": sample_text(30_000)[i:i + 300]}) + "\n"
                               for i in range(0, 30_000, 300)))
    plain = losses(train(records, tmp_path / "plain", max_steps=4, log_interval=1))
    again = losses(train(records, tmp_path / "again", max_steps=4, log_interval=1, doc_mask=False))
    masked = losses(train(records, tmp_path / "masked", max_steps=4, log_interval=1, doc_mask=True))
    assert plain == again  # the flag off is the plain model, bit for bit
    assert masked[4] != plain[4]  # on, windows that hold several documents train differently
    assert all(torch.isfinite(torch.tensor(list(masked.values()))))


def test_special_tokens_of_your_own_stand_for_their_text_in_the_data(tmp_path, capsys):
    text = tmp_path / "tool.txt"
    text.write_text("".join(f"line {i}: call [TOOL] now\n" for i in range(60)))
    out = train(text, tmp_path / "run", "--special-tokens", "[TOOL]", "--json", quiet=False, val_split=0)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["train tokens"] == len(text.read_text()) - 60 * (len("[TOOL]") - 1)  # one token each
    _, tokenizer, _ = load_model(out / "final.pt")
    assert tokenizer.encode("[TOOL]") == [tokenizer.special_id("[TOOL]")]
    # resumed, the tokenizer stays as it is: another list of special tokens is refused
    result = run_process("train", text, "-o", out, "--resume", "--special-tokens", "[OTHER]", "--max-steps", "8")
    assert "--special-tokens" in assert_one_line_error(result)


def test_doc_mask_with_documents_joined_by_text_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text(sample_text(3_000))
    result = run_process("train", tmp_path / "t.txt", "-o", tmp_path / "run", "--doc-mask", "--doc-boundary", "none",
                         *tiny_args())
    assert "--doc-mask keeps documents apart" in assert_one_line_error(result)


# ---------------------------------------------------------------- chat fine-tuning
def test_chat_fine_tuning_trains_on_the_assistants_turns(tmp_path, chats, base, capsys):
    out = train(chats / "train.jsonl", tmp_path / "run", "--format", "chat", "--init-from", base, "--json",
                quiet=False, max_steps=4, **CHAT_SHAPE)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert "conversations" in start["documents"] and "--train-on assistant" in start["documents"]
    saved = load_checkpoint(out / "final.pt")
    assert saved["config"]["data"]["format"] == "chat"
    _, tokenizer, _ = load_model(out / "final.pt")
    assert tokenizer.special_id(END_OF_TURN) is not None
    every = train(chats / "train.jsonl", tmp_path / "all", "--format", "chat", "--init-from", base,
                  "--train-on", "all", max_steps=4, **CHAT_SHAPE)
    assert losses(every) != losses(out)


def test_a_chat_fine_tune_resumes_exactly_across_epochs(tmp_path, chats, base):
    exact = dict(lr_schedule="constant", warmup_steps=4, log_interval=1, grad_accum_steps=2, doc_mask=True,
                 **CHAT_SHAPE)
    few = tmp_path / "few.jsonl"  # 40 conversations: an epoch is a few steps, so the run crosses epochs
    few.write_text("".join((chats / "train.jsonl").read_text().splitlines(keepends=True)[:40]))
    straight = train(few, tmp_path / "straight", "--format", "chat", "--init-from", base, max_steps=8, **exact)
    half = train(few, tmp_path / "half", "--format", "chat", "--init-from", base, max_steps=4, **exact)
    assert run_cli("train", "-o", half, "--resume", "--max-steps", "8", "--quiet") == 0
    assert losses(half) == pytest.approx(losses(straight), rel=0, abs=1e-6)
    assert json.loads((straight / "summary.json").read_text())["epochs"] > 1


@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_a_model_trained_from_scratch_on_conversations_with_every_tokenizer(tmp_path, chats, kind):
    out = train(chats / "train.jsonl", tmp_path / "run", "--format", "chat", "--tokenizer", kind, max_steps=3,
                **CHAT_SHAPE)
    model, tokenizer, cfg = load_model(out / "final.pt")
    assert cfg.data.format == "chat" and tokenizer.kind == kind
    ids = ChatTemplate(tokenizer).prompt([{"role": "user", "content": "Spell this word backwards: king"}])
    assert ids[0] == tokenizer.special_id(ROLE_TOKENS["user"]) and ids[-1] == tokenizer.special_id(
        ROLE_TOKENS["assistant"])


@pytest.mark.parametrize("record, message", [
    ('{"messages": [{"role": "user", "content": "hi"}]}', "chats.jsonl:2: the conversation has no assistant message"),
    ('{"text": "hi"}', "chats.jsonl:2: a chat record needs a 'messages' list"),
])
def test_a_bad_conversation_is_a_one_line_error_naming_its_line(tmp_path, record, message):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "a"},
                                             {"role": "assistant", "content": "b"}]}) + "\n" + record + "\n")
    result = run_process("train", path, "--format", "chat", "-o", tmp_path / "run", *tiny_args())
    assert message in assert_one_line_error(result)


def test_a_model_imported_from_hugging_face_is_fine_tuned_on_conversations(tmp_path, chats):
    from test_hf_interop import hub_like

    directory, _ = hub_like(tmp_path, sample_text(20_000), "llama")
    before = load_model(directory)[1]
    out = train(chats / "train.jsonl", tmp_path / "run", "--format", "chat", "--init-from", str(directory),
                max_steps=3, **{name: None for name in TINY_SHAPE})  # the shape is the imported model's
    model, tokenizer, cfg = load_model(out / "final.pt")
    assert tokenizer.eos_id == before.eos_id  # its own <|endoftext|> serves as ours
    added = [tokenizer.special_id(text) for text in (*ROLE_TOKENS.values(), END_OF_TURN)]
    assert None not in added and min(added) >= before.vocab_size  # the turn tokens appended
    assert model.embed.weight.shape[0] >= tokenizer.vocab_size and cfg.data.format == "chat"


def test_interactive_chat_keeps_the_conversation_and_ends_each_reply_at_its_turn(chat_model):
    from fundamentallm.cli import load_generator
    from fundamentallm.interactive import Repl

    generator = load_generator(str(chat_model), "cpu")
    seen: list[list[int]] = []
    stream = generator.stream

    def recording(prompt, options, alternatives=None, stop_ids=None):
        seen.append((list(prompt), stop_ids))
        return stream(prompt, options, alternatives, stop_ids)
    generator.stream = recording
    lines = iter(["Spell this word backwards: king", "And: queen"])
    out = io.StringIO()

    def read(_prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None
    repl = Repl(generator, SamplingOptions(max_tokens=8, temperature=0), read=read, out=out, chat=True,
                system="Be brief.")
    assert repl.run() == 0
    template = generator.template
    first_reply = repl.messages[2]["content"]
    assert [m["role"] for m in repl.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert seen[0] == (template.prompt(repl.messages[:2]), template.stop_ids)
    assert seen[1][0] == template.prompt(repl.messages[:4])  # the second turn sees the first, reply included
    assert first_reply in out.getvalue()


def test_interactive_chat_with_a_base_model_is_a_one_line_error(base):
    result = run_process("interactive", base, "--chat")
    assert "was trained on plain text, not fine-tuned on conversations" in assert_one_line_error(result)


def test_the_server_answers_chats_through_the_template(chat_model):
    from starlette.testclient import TestClient

    from fundamentallm.cli import load_generator
    from fundamentallm.server import create_app

    generator = load_generator(str(chat_model), "cpu")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write this word in capitals: "
                                                                                        "king"}]
    with TestClient(create_app(generator, str(chat_model), model_id="chat")) as client:
        reply = client.post("/v1/chat/completions", json={"model": "chat", "messages": messages, "max_tokens": 12,
                                                          "temperature": 0}).json()
    assert reply["usage"]["prompt_tokens"] == len(generator.template.prompt(messages))
    text = reply["choices"][0]["message"]["content"]
    direct = generator.complete(generator.template.prompt(messages), SamplingOptions(max_tokens=12, temperature=0),
                                stop_ids=generator.template.stop_ids)[0]
    assert text == direct.text and END_OF_TURN not in text


# ---------------------------------------------------------------- exports
@pytest.mark.parametrize("kind", ["char", "byte", "bpe"])
def test_the_export_carries_the_template_and_transformers_renders_the_same_ids(tmp_path, chats, kind):
    from transformers import AutoTokenizer

    out = train(chats / "train.jsonl", tmp_path / "run", "--format", "chat", "--tokenizer", kind, max_steps=2,
                **CHAT_SHAPE)
    assert run_cli("export", out / "final.pt", tmp_path / "hf") == 0
    config = json.loads((tmp_path / "hf/tokenizer_config.json").read_text())
    assert "chat_template" in config and config["eos_token"] == config["bos_token"] == EOS
    generation = json.loads((tmp_path / "hf/generation_config.json").read_text())
    _, tokenizer, _ = load_model(out / "final.pt")
    template = ChatTemplate(tokenizer)
    assert generation["eos_token_id"] == template.stop_ids
    assert json.loads((tmp_path / "hf/config.json").read_text())["eos_token_id"] == tokenizer.eos_id
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")
    for line in (chats / "test.jsonl").read_text().splitlines()[:10]:
        messages = json.loads(line)["messages"]
        rendered = theirs.apply_chat_template(messages, tokenize=True, return_dict=False)
        assert list(rendered) == template.render(messages)[0]
        prompt = theirs.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                            return_dict=False)
        assert list(prompt) == template.prompt(messages[:-1])
    # and it comes back from the export as a chat model
    assert run_cli("import", tmp_path / "hf", tmp_path / "back.pt") == 0
    assert load_model(tmp_path / "back.pt")[2].data.format == "chat"


def test_lm_evaluation_harness_runs_on_an_export_with_no_extra_arguments(tmp_path):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    records = tmp_path / "docs.jsonl"
    records.write_text("".join(json.dumps({"text": sample_text(20_000)[i:i + 500]}) + "\n"
                               for i in range(0, 20_000, 500)))
    out = train(records, tmp_path / "run", max_steps=3)
    assert run_cli("export", out / "final.pt", tmp_path / "hf") == 0
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in [
        {"context": "ROMEO: I will", "choices": [" go", " qz"], "answer": 0},
        {"context": "JULIET: O", "choices": [" Romeo", " zzzz"], "answer": 0}]))
    (tmp_path / "task.yaml").write_text(
        f"task: local_choice\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {questions}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: '{{answer}}'\nmetric_list:\n  - metric: acc\n")
    results = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={tmp_path / 'hf'},dtype=float32",
                                      tasks=["local_choice"], task_manager=TaskManager(include_path=str(tmp_path)),
                                      device="cpu", batch_size=2)
    assert 0 <= results["results"]["local_choice"]["acc,none"] <= 1


def test_system_without_chat_is_a_one_line_error(base):
    result = run_process("interactive", base, "--system", "Be brief.")
    assert "--system opens a conversation: it needs --chat" in assert_one_line_error(result)


def test_new_starts_a_fresh_conversation_keeping_the_system_message(chat_model):
    from fundamentallm.cli import load_generator
    from fundamentallm.interactive import Repl

    lines = iter(["In capitals: king", "/new"])

    def read(_prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None
    repl = Repl(load_generator(str(chat_model), "cpu"), SamplingOptions(max_tokens=4, temperature=0), read=read,
                out=io.StringIO(), chat=True, system="Be brief.")
    assert repl.run() == 0
    assert repl.messages == [{"role": "system", "content": "Be brief."}]
