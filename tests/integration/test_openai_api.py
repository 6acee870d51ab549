"""`fundamentallm serve`'s OpenAI-compatible endpoints, driven by the official `openai`
client against a live server on loopback, with an API key set. Expected texts come from the
CLI (`generate --greedy`), never hard-coded."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from integration_helpers import assert_one_line_error, run_cli, run_process
from server_helpers import PROMPT, serving, tiny_checkpoint

openai = pytest.importorskip("openai")

KEY = "test-key-5f1c"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_text) -> Path:
    return tiny_checkpoint(tmp_path_factory, tiny_text)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    yield from serving(checkpoint, tmp_path_factory.mktemp("openai") / "stderr.txt",
                       "--api-key", KEY, "--model-name", "tiny")


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0, timeout=60)


def cli_greedy(checkpoint: Path, capsys, prompt: str, tokens: int) -> str:
    assert run_cli("generate", checkpoint, "--prompt", prompt, "--greedy", "--max-tokens", str(tokens),
                   "--json") == 0
    return json.loads(capsys.readouterr().out)["samples"][0]["text"]


def test_models_lists_the_served_model(client):
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    assert models.data[0].owned_by == "fundamentallm"


def test_completion_equals_the_cli_and_counts_tokens(client, checkpoint, capsys):
    expected = cli_greedy(checkpoint, capsys, PROMPT, 20)
    reply = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    assert reply.choices[0].text == expected and reply.choices[0].finish_reason == "length"
    assert reply.usage.prompt_tokens == len(PROMPT)  # the character tokenizer: one per character
    assert reply.usage.completion_tokens == 20 and reply.usage.total_tokens == len(PROMPT) + 20


def test_streaming_chunks_add_up_to_the_whole_reply(client):
    whole = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, seed=5, n=2)
    chunks = list(client.completions.create(model="tiny", prompt=PROMPT, max_tokens=30, seed=5, n=2,
                                            stream=True, stream_options={"include_usage": True}))
    for i in range(2):
        pieces = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == i]
        assert "".join(p.text for p in pieces) == whole.choices[i].text
        assert pieces[-1].finish_reason == "length" and all(p.finish_reason is None for p in pieces[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 60
    assert whole.choices[0].text != whole.choices[1].text  # n samples, not one repeated


def test_the_stream_ends_with_done(server):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


def test_seed_stop_and_logprobs(client):
    a = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=25, seed=11)
    b = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=25, seed=11)
    assert a.choices[0].text == b.choices[0].text
    full = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0)
    stop = full.choices[0].text[10:12]
    cut = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].text == full.choices[0].text[:full.choices[0].text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    scored = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=6, temperature=0, logprobs=3)
    logprobs = scored.choices[0].logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text and len(logprobs.token_logprobs) == 6
    assert all(len(top) == 3 and max(top.values()) == lp  # greedy: the chosen token is the likeliest
               for top, lp in zip(logprobs.top_logprobs, logprobs.token_logprobs))
    assert logprobs.text_offset[1] == len(logprobs.tokens[0])


def test_chat_completion_uses_the_template(client, checkpoint, capsys):
    messages = [{"role": "system", "content": "Speak as a citizen."}, {"role": "user", "content": "Who goes?"}]
    expected = cli_greedy(checkpoint, capsys, "Speak as a citizen.\n\nUser: Who goes?\nAssistant:", 15)
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=15, temperature=0)
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected.split("\nUser:")[0]
    streamed = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=15,
                                                   temperature=0, stream=True))
    assert streamed[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == reply.choices[0].message.content


def test_missing_or_wrong_key_is_401(server):
    for key in ("wrong", None):
        if key is None:  # no Authorization header at all
            response = httpx.get(server.url + "/v1/models", timeout=30)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_api_key"
            continue
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as error:
            client.completions.create(model="tiny", prompt=PROMPT, max_tokens=3)
        assert error.value.status_code == 401 and error.value.body["code"] == "invalid_api_key"
    assert httpx.post(server.url + "/generate", json={"prompt": PROMPT}, timeout=30).status_code == 401
    assert httpx.get(server.url + "/health", timeout=30).status_code == 200  # for probes, no key
    assert httpx.get(server.url + "/", timeout=30).status_code == 200  # the page, which asks for the key
    assert httpx.get(server.url + "/info", timeout=30).status_code == 401


@pytest.mark.parametrize("body,status,param", [
    ({"model": "gpt-4", "prompt": "x"}, 404, "model"),
    ({"model": "tiny", "prompt": "x", "temperature": 3}, 400, "temperature"),
    ({"model": "tiny", "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ({"model": "tiny", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "tiny", "prompt": "x", "logit_bias": {"1": 5}}, 400, "logit_bias"),
    ({"model": "tiny", "prompt": ""}, 400, "prompt"),
    ({"model": "tiny", "prompt": "x", "logprobs": 9}, 400, "logprobs"),
])
def test_bad_requests_get_openai_error_objects(server, body, status, param):
    response = httpx.post(server.url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=30)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and "\n" not in error["message"]


def test_unknown_v1_paths_are_openai_404s(server):
    response = httpx.get(server.url + "/v1/engines", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_listening_beyond_loopback_needs_a_key(checkpoint):
    result = run_process("serve", checkpoint, "--host", "0.0.0.0", "--port", "0")
    assert_one_line_error(result, "--host 0.0.0.0 lets other machines reach the server: set an API key")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_unreadable_bodies_are_openai_400s(server, content):
    response = httpx.post(server.url + "/v1/chat/completions", content=content, timeout=30,
                          headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
