"""`fundamentallm serve`: a real server process on a tiny model, spoken to over HTTP.

One server runs per module (starting Python and torch costs seconds); the tests talk to it
over loopback with httpx. Expected texts come from the CLI or from the server itself, never
hard-coded: they depend on the trained weights.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from integration_helpers import run_cli
from server_helpers import PROMPT, ServerProcess, serving, tiny_checkpoint

LIMIT = 100_000  # --max-tokens-limit: high enough for a generation that would run for minutes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_text) -> Path:
    return tiny_checkpoint(tmp_path_factory, tiny_text)


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    yield from serving(checkpoint, tmp_path_factory.mktemp("server") / "stderr.txt",
                       "--max-tokens-limit", str(LIMIT))


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def generate(client: httpx.Client, **body) -> dict:
    response = client.post("/generate", json={"prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def read_events(lines) -> list[tuple[str, dict]]:
    """Server-sent events as (name, data) pairs, from an iterator of lines."""
    events, name, data = [], "message", []
    for line in lines:
        if line == "":
            if data:
                events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
        elif line.startswith("event:"):
            name = line[len("event:"):].strip()
        elif line.startswith("data:"):
            data.append(line[len("data:"):].lstrip(" "))
    return events


def stream(client: httpx.Client, **body) -> list[tuple[str, dict]]:
    with client.stream("POST", "/generate", json={"prompt": PROMPT, "stream": True, **body}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return read_events(response.iter_lines())


# ---------------------------------------------------------------- health, info
def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert isinstance(response.json()["clients_left"], int)


def test_info_matches_the_checkpoint(client, checkpoint):
    from fundamentallm.checkpoint import load_model

    model, tokenizer, _ = load_model(checkpoint)
    info = client.get("/info").json()
    assert info["checkpoint"] == str(checkpoint)
    assert info["model"] == {
        "model_dim": model.cfg.model_dim, "num_layers": model.cfg.num_layers,
        "num_heads": model.cfg.num_heads, "context_length": model.cfg.context_length,
        "vocab_size": model.cfg.vocab_size, "parameters": model.num_parameters()}
    assert info["tokenizer"] == {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size}
    assert info["context_length"] == model.cfg.context_length == 16
    assert info["limits"]["max_tokens"] == LIMIT and info["limits"]["num_samples"] == 16


# ---------------------------------------------------------------- generation
def test_greedy_generation_equals_the_cli(client, checkpoint, capsys):
    answer = generate(client, temperature=0, max_tokens=40)
    assert answer["prompt"] == PROMPT
    [sample] = answer["samples"]
    assert set(sample) == {"text", "tokens", "mean_logprob", "tokens_per_s", "stop_reason"}
    assert sample["tokens"] == 40 and sample["stop_reason"] == "length" and sample["mean_logprob"] < 0
    assert run_cli("generate", checkpoint, "--device", "cpu", "--temperature", "0",
                   "--prompt", PROMPT, "--max-tokens", "40") == 0
    assert capsys.readouterr().out == PROMPT + sample["text"] + "\n"
    assert sample["text"].strip(), "a model that writes only spaces proves little"


def test_seed_makes_sampling_repeatable(client):
    one = generate(client, temperature=0.9, seed=7, max_tokens=30, num_samples=2)["samples"]
    two = generate(client, temperature=0.9, seed=7, max_tokens=30, num_samples=2)["samples"]
    assert [s["text"] for s in one] == [s["text"] for s in two]
    assert one[0]["text"] != one[1]["text"]  # the samples of a batch differ


def test_streaming_events_add_up_to_the_done_event(client):
    options = dict(temperature=0.9, seed=5, max_tokens=40, num_samples=2)
    events = stream(client, **options)
    name, done = events[-1]
    assert name == "done" and done["prompt"] == PROMPT and len(done["samples"]) == 2
    pieces = events[:-1]
    assert pieces and all(n == "message" and set(d) == {"sample", "text"} for n, d in pieces)
    for i, sample in enumerate(done["samples"]):
        assert "".join(d["text"] for _, d in pieces if d["sample"] == i) == sample["text"]
    # the same request without streaming gives the same texts
    plain = generate(client, **options)["samples"]
    assert [s["text"] for s in plain] == [s["text"] for s in done["samples"]]


def test_stop_string_cuts_the_text_streaming_or_not(client):
    full = generate(client, temperature=0.9, seed=3, max_tokens=80)["samples"][0]["text"]
    stop = full[30:33]
    expected = full[:full.find(stop)]
    sample = generate(client, temperature=0.9, seed=3, max_tokens=80, stop=[stop])["samples"][0]
    assert sample["text"] == expected and sample["stop_reason"] == "stop"
    events = stream(client, temperature=0.9, seed=3, max_tokens=80, stop=[stop])
    assert "".join(d["text"] for n, d in events if n == "message") == expected  # no part of `stop`
    assert events[-1][1]["samples"][0]["stop_reason"] == "stop"


def test_ban_removes_a_character(client):
    options = dict(temperature=0.9, seed=11, max_tokens=80)
    text = generate(client, **options)["samples"][0]["text"]
    common = Counter(c for c in text if not c.isspace()).most_common(1)[0][0]
    banned = generate(client, **options, ban=[common])["samples"][0]["text"]
    assert common not in banned and banned != text and len(banned) > 0


# ---------------------------------------------------------------- rejections
def rejected(response: httpx.Response, status: int, fragment: str = "") -> str:
    assert response.status_code == status, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    assert fragment in error, error
    return error


@pytest.mark.parametrize("body, fragment", [
    ({"prompt": PROMPT, "max_tokens": LIMIT + 1}, "max_tokens"),
    ({"prompt": PROMPT, "num_samples": 17}, "num_samples"),
    ({"prompt": PROMPT, "beam_width": 17}, "beam_width"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"max_tokens": 5}, "prompt"),
    ({"prompt": PROMPT, "temperature": -1}, "temperature"),
    ({"prompt": PROMPT, "top_p": 2}, "top_p"),
    ({"prompt": PROMPT, "max_tokens": "many"}, "max_tokens"),
    ({"prompt": PROMPT, "wibble": 1}, "wibble"),
    ({"prompt": PROMPT, "stream": "yes"}, "stream"),
    ({"prompt": PROMPT, "ban": ["no such token"]}, "ban"),
    ({"prompt": PROMPT, "beam_width": 2, "num_samples": 2}, "beam"),
    (["a", "list"], "object"),
], ids=lambda v: json.dumps(v)[:40] if not isinstance(v, str) else v)
@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
def test_invalid_requests_are_422(client, body, fragment, streaming):
    if streaming and isinstance(body, dict) and "stream" not in body:
        body = {**body, "stream": True}  # refused before any event is sent, as plain JSON
    rejected(client.post("/generate", json=body), 422, fragment)


def test_malformed_json_is_400(client):
    rejected(client.post("/generate", content=b'{"prompt": "x",', headers={"content-type": "application/json"}),
             400, "JSON")
    rejected(client.post("/generate", content=b"\xff\xfe"), 400, "JSON")


def test_oversized_body_is_413(client):
    big = json.dumps({"prompt": "a" * 70_000}).encode()
    rejected(client.post("/generate", content=big), 413, "bytes")
    # without a Content-Length (chunked), refused while reading
    rejected(client.post("/generate", content=iter([big[:40_000], big[40_000:]])), 413, "bytes")
    assert client.get("/health").status_code == 200


def logged(server, pattern: str) -> bool:
    """Whether the server's stderr holds a line matching `pattern` (within a few seconds: a
    request is logged once its response has ended, which the client may see first)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if re.search(pattern, server.stderr(), re.M):
            return True
        time.sleep(0.05)
    return False


def test_the_start_names_the_page_and_the_openai_base_url(server):
    lines = [server.lines.get(timeout=10).strip() for _ in range(3)]
    assert lines == [f"the page: {server.url}/", f"OpenAI clients: base_url {server.url}/v1, model 'run/final'",
                     "Ctrl-C stops"]


def test_every_request_is_logged_in_one_line(client, server):
    generate(client, max_tokens=7, num_samples=2, seed=1)
    assert logged(server, r"^POST /generate 200 14 tokens \d+\.\d\d s$")
    client.get("/info")
    assert logged(server, r"^GET /info 200 \d+\.\d\d s$")  # no generation, no token count
    assert client.post("/generate", content=b"{not json").status_code == 400
    assert logged(server, r"^POST /generate 400 \d+\.\d\d s$")
    with client.stream("POST", "/v1/completions", json={"model": "run/final", "prompt": PROMPT, "max_tokens": 5,
                                                         "stream": True}) as response:
        assert response.status_code == 200 and "".join(response.iter_text())
    assert logged(server, r"^POST /v1/completions 200 5 tokens \d+\.\d\d s$")


def test_quiet_logs_no_requests(checkpoint, tmp_path):
    quiet = ServerProcess(checkpoint, "--quiet", log=tmp_path / "stderr.txt")
    try:
        assert httpx.get(f"{quiet.url}/health", timeout=30).status_code == 200
        time.sleep(0.5)
    finally:
        assert quiet.stop() == 0
    assert "/health" not in quiet.stderr()


def test_unknown_paths_and_methods_answer_json(client):
    rejected(client.get("/nowhere"), 404)
    rejected(client.get("/generate"), 405)


# ---------------------------------------------------------------- concurrency
def test_simultaneous_requests_wait_their_turn(client, server):
    options = [dict(temperature=1.0, seed=seed, max_tokens=50) for seed in range(4)]
    start = threading.Barrier(len(options))

    def request(body: dict) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            start.wait()
            return own.post("/generate", json={"prompt": PROMPT, **body})

    with ThreadPoolExecutor(len(options)) as pool:
        responses = list(pool.map(request, options))
    assert [r.status_code for r in responses] == [200] * len(options)
    texts = [r.json()["samples"][0]["text"] for r in responses]
    assert len(set(texts)) == len(texts)  # distinct seeds, distinct texts
    # each equals the same request made alone: running together mixed up nothing
    assert texts == [generate(client, **body)["samples"][0]["text"] for body in options]


def test_health_answers_during_a_long_generation_and_leaving_stops_it(client, server):
    long = {"prompt": PROMPT, "stream": True, "max_tokens": LIMIT, "temperature": 1.0}
    with ThreadPoolExecutor(1) as pool, httpx.Client(base_url=server.url, timeout=30) as own:
        with own.stream("POST", "/generate", json=long) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # generating now
            began = time.perf_counter()
            assert client.get("/health", timeout=5).json()["status"] == "ok"
            assert time.perf_counter() - began < 2
            # a second generation waits for the model...
            waiting = pool.submit(generate, client, temperature=0, max_tokens=5)
            time.sleep(1.0)
            assert not waiting.done()
            assert next(line for line in lines if line).startswith("data: ")  # still generating
        # ...until this client leaves: its generation (minutes of work) must stop and free the model.
        left = time.perf_counter()
        assert waiting.result(timeout=20)["samples"][0]["tokens"] == 5
        assert time.perf_counter() - left < 10


def test_a_client_that_gives_up_waiting_frees_the_model(client, server):
    body = {"prompt": PROMPT, "max_tokens": LIMIT}  # not streaming: minutes of work
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/generate", json=body, timeout=1.5)  # closes the connection
    began = time.perf_counter()
    assert generate(client, temperature=0, max_tokens=5)["samples"][0]["tokens"] == 5
    assert time.perf_counter() - began < 10


def test_interrupt_stops_the_server_cleanly_mid_stream(checkpoint, tmp_path):
    served = ServerProcess(checkpoint, "--max-tokens-limit", str(LIMIT), log=tmp_path / "stderr.txt")
    try:
        body = {"prompt": PROMPT, "stream": True, "max_tokens": LIMIT}
        with httpx.Client(base_url=served.url, timeout=30) as own:
            with own.stream("POST", "/generate", json=body) as response:
                assert next(response.iter_lines()).startswith("data: ")
                began = time.perf_counter()
                served.process.send_signal(signal.SIGINT)  # Ctrl-C
                assert served.process.wait(timeout=15) == 0
                assert time.perf_counter() - began < 10
    finally:
        served.stop()
    assert "Traceback" not in served.stderr() and "interrupted" not in served.stderr(), served.stderr()


# ---------------------------------------------------------------- clients that vanish
def test_clients_that_vanish_free_their_slots_count_in_health_and_log_one_line(checkpoint, tmp_path):
    served = ServerProcess(checkpoint, "--max-concurrent", "2", "--max-tokens-limit", str(LIMIT),
                           log=tmp_path / "stderr.txt")
    try:
        def left() -> int:
            return httpx.get(f"{served.url}/health", timeout=10).json()["clients_left"]

        def counted(n: int) -> bool:
            deadline = time.monotonic() + 20
            while left() < n and time.monotonic() < deadline:
                time.sleep(0.05)
            return left() == n

        host, port = served.url.split("//")[1].split(":")
        sock = socket.create_connection((host, int(port)), timeout=10)  # half a body, then gone
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
        time.sleep(0.2)
        sock.close()
        assert counted(1)
        # every admission slot taken by a generation of minutes whose client then leaves
        body = {"prompt": PROMPT, "max_tokens": LIMIT}
        with ThreadPoolExecutor(2) as pool:
            gone = [pool.submit(httpx.post, f"{served.url}/generate", json=body, timeout=1.0) for _ in range(2)]
            assert all(isinstance(f.exception(), httpx.ReadTimeout) for f in gone)
        assert counted(3)
        response = httpx.post(f"{served.url}/generate", json={"prompt": PROMPT, "max_tokens": 5}, timeout=30)
        assert response.status_code == 200  # at once: no 503, the slots are free again
    finally:
        assert served.stop() == 0
    log = served.stderr()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert len(re.findall(r"^POST /generate 499 \d+\.\d\d s \(client left\)$", log, re.M)) == 3, log
