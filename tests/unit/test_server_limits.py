"""The server's limits, in process: the admission queue (--max-concurrent: one generation
runs, the rest queue, beyond that 503 with Retry-After) and the body timeout (408 for a body
that never finishes). The model is held mid-generation by a gate, so the timing is exact."""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest

from fundamentallm.generation import TextGenerator
from fundamentallm.server import Limits, create_app
from fundamentallm.tokenizers import CharTokenizer


class GatedGenerator(TextGenerator):
    """A real generator whose every generation waits at its first step until the gate opens."""

    def __init__(self, model, tokenizer):
        super().__init__(model, tokenizer)
        self.gate, self.started = threading.Event(), threading.Semaphore(0)

    def stream(self, *args, **kwargs):
        self.started.release()
        self.gate.wait(30)
        yield from super().stream(*args, **kwargs)


@pytest.fixture
def generator(tiny_model) -> GatedGenerator:
    tokenizer = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz .,\n")
    return GatedGenerator(tiny_model.eval(), tokenizer)


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30)


@pytest.mark.parametrize("path", ["/generate", "/v1/completions"])
def test_beyond_max_concurrent_requests_are_turned_away_with_retry_after(generator, path):
    app = create_app(generator, "runs/tiny/final.pt", Limits(max_concurrent=2))
    body = {"prompt": "abc", "max_tokens": 3, **({"model": "tiny/final"} if path.startswith("/v1") else {})}

    async def scenario():
        async with client(app) as c:
            results = {}

            async def send(name):
                results[name] = await c.post(path, json=body)

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(send, "running")
                await anyio.to_thread.run_sync(generator.started.acquire)  # the first one has the model
                tasks.start_soon(send, "queued")
                await anyio.sleep(0.2)  # the second waits for the model
                third = await c.post(path, json=body)
                assert third.status_code == 503
                assert third.headers["retry-after"] == "1"
                assert "--max-concurrent" in str(third.json())
                generator.gate.set()
            assert results["running"].status_code == results["queued"].status_code == 200
            # the places are free again
            assert (await c.post(path, json=body)).status_code == 200

    anyio.run(scenario)


def test_a_body_that_never_finishes_gets_408_and_frees_its_place(generator):
    app = create_app(generator, "runs/tiny/final.pt", Limits(body_timeout=0.3, max_concurrent=1))
    generator.gate.set()

    async def never_finishing():
        yield b'{"prompt": "ab'
        await anyio.sleep(5)
        yield b'c"}'

    async def scenario():
        async with client(app) as c:
            reply = await c.post("/generate", content=never_finishing(), headers={"content-type": "application/json"})
            assert reply.status_code == 408
            assert reply.json() == {"error": "the request body did not arrive within 0.3 s"}
            assert (await c.post("/generate", json={"prompt": "abc", "max_tokens": 2})).status_code == 200

    anyio.run(scenario)


def test_deeply_nested_json_is_400_not_a_crash(generator):
    app = create_app(generator, "runs/tiny/final.pt")

    async def scenario():
        async with client(app) as c:
            for path in ("/generate", "/v1/completions"):
                reply = await c.post(path, content=b"[" * 20_000 + b"]" * 20_000)
                assert reply.status_code == 400, path
                assert "nested too deeply" in reply.text

    anyio.run(scenario)
