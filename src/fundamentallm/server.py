"""`fundamentallm serve`: an HTTP API and a small web page over one checkpoint.

Endpoints:
- `POST /generate`: JSON `{"prompt": "...", "stream": false, ...}` where every other key is
  a `SamplingOptions` field, read by `SamplingOptions.updated`, so each option means what
  the same `generate` flag means. The answer is `{"prompt", "samples": [...]}`; with
  `"stream": true` it is server-sent events: `data: {"sample": i, "text": "..."}` per new
  piece of text, then `event: done` whose data is the non-streaming answer.
- `GET /health`, `GET /info` (the model, tokenizer, checkpoint and request limits), `GET /`
  (the page in web/index.html).
- `/v1/models`, `/v1/completions`, `/v1/chat/completions`: OpenAI's API (openai_api.py).

Every error is JSON `{"error": "one line"}`: 400 unreadable JSON (not UTF-8, malformed,
nested too deeply), 408 a body not sent within `--body-timeout`, 413 a body over
`MAX_BODY_BYTES`, 422 a request that cannot be served as asked, 503 (with `Retry-After`)
when `--max-concurrent` generation requests are already admitted; under /v1 it is OpenAI's
error object instead.

A client that leaves before its reply is complete (it closes or resets the connection while
sending its body, while waiting for its turn, or in the middle of a stream) is no error of
the server's: its generation stops, its place in the queue is freed, the access log marks
its one line `(client left)` (status 499, nginx's "client closed request", where no reply
was begun) and `/health` counts it in `clients_left`. Never a traceback.

With an API key (`--api-key`, or FUNDAMENTALLM_API_KEY) every path but /health and the page
needs the header `Authorization: Bearer KEY` (401 otherwise; the page asks for the key and
sends it); the server refuses to listen beyond loopback without one.

The model is not thread-safe, so one lock serialises generations: one runs and the other
admitted requests queue for their turn, at most `--max-concurrent` in all; beyond that a
request is turned away at once with 503, so a flood cannot build an unbounded queue.
Generation steps run in the thread pool, so the event loop keeps answering (e.g. /health)
while a long generation runs; a streaming client that disconnects stops its generation.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fundamentallm import openai_api
from fundamentallm.errors import UserError
from fundamentallm.generation import TextGenerator
from fundamentallm.sampling import SamplingOptions

__all__ = ["API_KEY_VARIABLE", "MAX_BODY_BYTES", "MAX_SAMPLES", "Limits", "create_app", "serve"]

API_KEY_VARIABLE = "FUNDAMENTALLM_API_KEY"

MAX_BODY_BYTES = 64 * 1024
MAX_SAMPLES = 16  # num_samples and beam_width: both multiply the work of one request
# The page may only talk to this server and load nothing from elsewhere: it must work offline.
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
               "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much the server takes on at once."""

    max_tokens: int = 1000  # the largest max_tokens a request may ask for
    max_concurrent: int = 16  # generation requests admitted at once (one runs, the rest queue)
    body_timeout: float = 30.0  # seconds a client has to send its whole request body


RETRY_AFTER_S = 1  # what a 503 tells a client to wait: a tiny model's generation takes about that
CLIENT_LEFT = 499  # nginx's "client closed request": the status logged for a reply nobody was there to read


class RequestError(Exception):
    """A request the server refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


async def read_body(request: Request, timeout: float) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed the limit: from
    Content-Length before reading anything, otherwise (chunked) while reading; and with 408
    when it has not all arrived within `timeout` seconds (a client that never finishes)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes")
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:  # closed or reset before the whole body came
        raise RequestError(CLIENT_LEFT, "the client left before sending its whole body") from None
    return bytes(body)


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a RequestError (400 not JSON, 422 not an object)."""
    try:
        values = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None
    except RecursionError:  # [[[[... within the size limit: Python's parser recurses per level
        raise RequestError(400, "the body's JSON is nested too deeply") from None
    if not isinstance(values, dict):
        raise RequestError(422, "the body must be a JSON object")
    return values


def parse_request(body: bytes, defaults: SamplingOptions, max_tokens_limit: int
                  ) -> tuple[str, bool, SamplingOptions]:
    """(prompt, stream, options) from a /generate body, or a RequestError."""
    values = json_object(body)
    prompt = values.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(422, "prompt must be a non-empty string")
    stream = values.pop("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(422, "stream must be true or false")
    try:
        options = defaults.updated(values, source="request")
    except UserError as exc:
        raise RequestError(422, str(exc)) from None
    if options.max_tokens > max_tokens_limit:
        raise RequestError(422, f"request: max_tokens must be at most {max_tokens_limit} "
                                f"(got {options.max_tokens})")
    for name in ("num_samples", "beam_width"):
        if getattr(options, name) > MAX_SAMPLES:
            raise RequestError(422, f"request: {name} must be at most {MAX_SAMPLES} "
                                    f"(got {getattr(options, name)})")
    return prompt, stream, options


def sse(data: Any, event: str | None = None) -> str:
    # json.dumps escapes newlines, so each payload is a single `data:` line.
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


class Generation:
    """One request's turn at the model: holds the lock until closed (exactly once), and
    steps the generation in the thread pool."""

    def __init__(self, lock: anyio.Semaphore, events: Iterator, on_close: Callable[[], None] = lambda: None):
        self.lock, self.events, self.closed, self.on_close = lock, events, False, on_close
        self.tokens: int | None = None  # generated, over all samples, once the completions are in

    async def next(self) -> Any:
        # The thread call cannot be cancelled halfway, so close() never meets a running step.
        event = await run_in_threadpool(next, self.events, None)
        if event is None:
            raise RuntimeError("generation ended without its completions")
        if isinstance(event, list):
            self.tokens = sum(completion.tokens for completion in event)
        return event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.events.close()  # ends generation; the generator state stays consistent
            self.lock.release()
            self.on_close()


class EventStream(StreamingResponse):
    """A streaming response that ends its generation however the response ends, even if
    the client left before the first byte was sent (then the body is never iterated), and
    calls `left(scope)` when the client left before the stream's end."""

    def __init__(self, content: AsyncIterator[str], generation: Generation, left: Callable[[Any], None]):
        super().__init__(self.to_the_end(content), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.generation, self.left, self.finished = generation, left, False

    async def to_the_end(self, content: AsyncIterator[str]) -> AsyncIterator[str]:
        async for piece in content:  # cancelled here when the client disconnects
            yield piece
        self.finished = True  # every piece was sent (or the server ended it: shutting down, an error event)

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:  # a server on ASGI 2.4 reports a send to a closed connection so
            pass
        finally:
            self.generation.close()
            if not self.finished:
                self.left(scope)


class AccessLog:
    """ASGI middleware: one line per request once its response has ended: method, path,
    status, tokens generated (for a generation that finished) and seconds, e.g.
    `POST /v1/completions 200 40 tokens 0.52 s`."""

    def __init__(self, app, write: Callable[[str], None]):
        self.app, self.write = app, write

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), {"code": 500}

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            state = scope.get("state", {})
            generation = state.get("generation")
            tokens = f" {generation.tokens} tokens" if generation is not None and generation.tokens is not None else ""
            self.write(f"{scope['method']} {scope['path']} {status['code']}{tokens} "
                       f"{time.perf_counter() - began:.2f} s" + (" (client left)" if state.get("client_left") else ""))


class BearerAuth:
    """ASGI middleware: every path but /health and the page needs `Authorization: Bearer KEY`.
    The page is the same static file for everyone and a browser cannot send the header with
    a page load: it asks for the key and sends it with its own requests."""

    OPEN = ("/health", "/")

    def __init__(self, app, key: str):
        self.app, self.key = app, key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.OPEN:
            header = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, token = header.partition(b" ")
            if scheme.lower() != b"bearer" or not token:
                await unauthorized(scope, "You didn't provide an API key: send the header "
                                   "'Authorization: Bearer KEY'")(scope, receive, send)
                return
            if not hmac.compare_digest(token.strip(), self.key):  # constant time: no guessing by timing
                await unauthorized(scope, "Incorrect API key provided")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def unauthorized(scope, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"}
    if scope["path"].startswith("/v1/"):
        body = openai_api.APIError(401, message, code="invalid_api_key").body()
        return JSONResponse(body, status_code=401, headers=headers)
    return JSONResponse({"error": message}, status_code=401, headers=headers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: resolved by the system, so not known to stay local
        return False


class Busy(Exception):
    """Every place in the queue is taken: 503, come back after Retry-After."""


def create_app(generator: TextGenerator, checkpoint: str, limits: Limits = Limits(),
               should_stop: Callable[[], bool] = lambda: False, api_key: str | None = None,
               model_id: str | None = None, log: Callable[[str], None] | None = None) -> Starlette:
    """The ASGI app. `should_stop()` true (the server is shutting down) ends generations early;
    `model_id` is the name OpenAI clients ask for (default: the checkpoint's name); `log`
    receives one line per request (AccessLog)."""
    max_tokens_limit = limits.max_tokens
    lock = anyio.Semaphore(1)  # a semaphore, not a Lock: a stream releases it from another task
    admitted = {"count": 0}  # generation requests running or waiting for the lock
    departures = {"count": 0}  # clients that left before their reply was complete (/health)
    defaults = SamplingOptions(max_tokens=min(SamplingOptions().max_tokens, max_tokens_limit))
    page = resources.files("fundamentallm").joinpath("web/index.html").read_text(encoding="utf-8")
    model, tokenizer = generator.model, generator.tokenizer
    model_id = model_id or model_name(checkpoint)
    info = {
        "checkpoint": checkpoint,
        "model_id": model_id,  # what /v1 requests name
        "chat": generator.template is not None,  # fine-tuned on conversations: the page opens in chat mode
        "model": {"model_dim": model.cfg.model_dim, "num_layers": model.cfg.num_layers,
                  "num_heads": model.cfg.num_heads, "context_length": model.cfg.context_length,
                  "vocab_size": model.cfg.vocab_size, "parameters": model.num_parameters()},
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
        "context_length": model.cfg.context_length,
        "limits": {"max_tokens": max_tokens_limit, "num_samples": MAX_SAMPLES,
                   "beam_width": MAX_SAMPLES, "body_bytes": MAX_BODY_BYTES,
                   "max_concurrent": limits.max_concurrent, "body_timeout_s": limits.body_timeout},
        "defaults": {k: v for k, v in defaults.to_dict().items() if k != "use_cache"},
    }

    async def start(prompt: str | list[int], options: SamplingOptions, alternatives: int | None = None,
                    stop_ids: list[int] | None = None) -> tuple[Generation, Any]:
        """Wait for the model; return the generation and its first event. Problems the
        generator finds (e.g. a --ban text it does not know) surface here, before any reply.
        Beyond --max-concurrent requests admitted, Busy at once."""
        if admitted["count"] >= limits.max_concurrent:
            raise Busy
        admitted["count"] += 1
        try:
            await lock.acquire()
        except BaseException:  # the client left while queued
            admitted["count"] -= 1
            raise
        generation = Generation(lock, generator.stream(prompt, options, alternatives, stop_ids),
                                lambda: admitted.update(count=admitted["count"] - 1))
        try:
            return generation, await generation.next()
        except BaseException:
            generation.close()
            raise

    def busy_headers() -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S)}

    busy_message = (f"the server is busy: {limits.max_concurrent} requests are already running or queued "
                    f"(--max-concurrent); retry after {RETRY_AFTER_S} s")

    def left(scope) -> None:
        """A client left before its reply was complete: counted, and marked for the access log."""
        departures["count"] += 1
        scope.setdefault("state", {})["client_left"] = True

    def client_left(request: Request) -> Response:
        left(request.scope)
        return error_response(CLIENT_LEFT, "the client left")  # sent to nobody; the status is for the log

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Content-Security-Policy": PAGE_POLICY})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "clients_left": departures["count"]})

    async def get_info(request: Request) -> Response:
        return JSONResponse(info)

    async def generate(request: Request) -> Response:
        try:
            prompt, stream, options = parse_request(await read_body(request, limits.body_timeout), defaults,
                                                    max_tokens_limit)
            generation, first = await start(prompt, options)
            request.state.generation = generation  # for the access log's token count
        except Busy:
            return JSONResponse({"error": busy_message}, status_code=503, headers=busy_headers())
        except RequestError as exc:
            return client_left(request) if exc.status == CLIENT_LEFT else error_response(exc.status, str(exc))
        except UserError as exc:
            return error_response(422, f"request: {exc}")
        if stream:
            return EventStream(stream_events(generation, first, prompt), generation, left)
        try:
            event = first
            while not isinstance(event, list):
                # Nobody to answer, or shutting down: stop rather than keep others waiting.
                if await request.is_disconnected():
                    return client_left(request)
                if should_stop():
                    return error_response(503, "generation stopped: the server is shutting down")
                event = await generation.next()
        finally:
            generation.close()
        return JSONResponse({"prompt": prompt, "samples": [c.to_dict() for c in event]})

    async def stream_events(generation: Generation, event: Any, prompt: str) -> AsyncIterator[str]:
        # If the client disconnects, Starlette cancels this iteration and EventStream closes
        # the generation.
        try:
            while not isinstance(event, list):
                if should_stop():
                    return
                yield sse({"sample": event[0], "text": event[1]})
                event = await generation.next()
            yield sse({"prompt": prompt, "samples": [c.to_dict() for c in event]}, "done")
        except Exception as exc:  # headers are sent: report in-band, one line
            yield sse({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}, "error")
        finally:
            generation.close()

    # ---- the OpenAI-compatible API ----
    created = int(time.time())

    async def models(request: Request) -> Response:
        return JSONResponse(openai_api.models_list(model_id, created, generator))

    async def openai_generate(request: Request, chat: bool) -> Response:
        try:
            try:
                values = json_object(await read_body(request, limits.body_timeout))
            except RequestError as exc:  # OpenAI answers 400 for any unreadable body
                if exc.status == CLIENT_LEFT:
                    return client_left(request)
                raise openai_api.APIError(400 if exc.status == 422 else exc.status, str(exc)) from None
            parsed = openai_api.Request(values, model_id, max_tokens_limit, chat, generator.template)
            prompt_tokens = len(parsed.prompt if isinstance(parsed.prompt, list)
                                else generator.tokenizer.encode(parsed.prompt))
            if prompt_tokens == 0:
                raise openai_api.APIError(400, "the prompt holds no token", "prompt")
            try:
                generation, first = await start(parsed.prompt, parsed.options, parsed.logprobs, parsed.stop_ids)
                request.state.generation = generation  # for the access log's token count
            except UserError as exc:
                raise openai_api.APIError(400, str(exc)) from None
            except Busy:
                error = openai_api.APIError(503, busy_message, kind="server_error")
                return JSONResponse(error.body(), status_code=503, headers=busy_headers())
        except openai_api.APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        if parsed.stream:
            chunks = openai_api.stream_chunks(parsed, generation.next, first, prompt_tokens, should_stop)
            return EventStream(chunks, generation, left)  # which ends the generation however it ends
        try:
            event = first
            while not isinstance(event, list):
                if await request.is_disconnected():
                    return client_left(request)
                if should_stop():
                    error = openai_api.APIError(503, "generation stopped: the server is shutting down",
                                                kind="server_error")
                    return JSONResponse(error.body(), status_code=503)
                event = await generation.next()
        finally:
            generation.close()
        return JSONResponse(openai_api.reply(parsed, event, prompt_tokens))

    async def completions(request: Request) -> Response:
        return await openai_generate(request, chat=False)

    async def chat_completions(request: Request) -> Response:
        return await openai_generate(request, chat=True)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/v1/"):
            error = openai_api.APIError(exc.status_code, str(exc.detail), code="not_found"
                                        if exc.status_code == 404 else None)
            return JSONResponse(error.body(), status_code=exc.status_code)
        return error_response(exc.status_code, exc.detail)

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}".splitlines()[0])

    routes = [Route("/", index), Route("/health", health), Route("/info", get_info),
              Route("/generate", generate, methods=["POST"]),
              Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
    if api_key:
        app.add_middleware(BearerAuth, key=api_key)
    if log is not None:
        app.add_middleware(AccessLog, write=log)  # added last: outermost, so refused requests are logged too
    return app


def model_name(checkpoint: str) -> str:
    """The id OpenAI clients use: the run directory's name for OUT/final.pt, else the file's."""
    path = Path(checkpoint)
    if path.is_dir() or not path.parent.name:
        return path.name or "fundamentallm"
    return f"{path.parent.name}/{path.stem}"


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening on host:port (0: a free port); a UserError if not possible."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def check_exposure(host: str, api_key: str | None) -> None:
    """Beyond loopback, strangers can connect: then an API key is required."""
    if not api_key and not is_loopback(host):
        raise UserError(f"--host {host} lets other machines reach the server: set an API key with --api-key "
                        f"KEY (or {API_KEY_VARIABLE}), so that only clients that know it are answered")


def serve(generator: TextGenerator, checkpoint: str, host: str = "127.0.0.1", port: int = 8000,
          limits: Limits = Limits(), api_key: str | None = None, model_id: str | None = None,
          log_requests: bool = True) -> int:
    """Serve until Ctrl-C or SIGTERM, then return 0. Prints `serving on http://HOST:PORT`
    (the real port, also for port 0) once connections are accepted, then the page's address
    and the base URL for OpenAI clients; with `log_requests`, one line per request on stderr."""
    check_exposure(host, api_key)
    sock = listening_socket(host, port)
    server: uvicorn.Server | None = None
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if log_requests else None
    app = create_app(generator, checkpoint, limits, lambda: bool(server and server.should_exit),
                     api_key, model_id, log)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    # Connections queue on the listening socket until the loop starts: safe to announce now.
    url = f"http://{shown}:{bound_port}"
    print(f"serving on {url}", flush=True)
    print(f"  the page: {url}/\n  OpenAI clients: base_url {url}/v1, model "
          f"{model_id or model_name(checkpoint)!r}\n  Ctrl-C stops", flush=True)
    # uvicorn re-raises the signal that stopped it, to the handlers it found: make those
    # ignore it, so a stop is a clean exit (status 0, no "interrupted", no traceback).
    in_main = threading.current_thread() is threading.main_thread()  # where signals can be set
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)
                if in_main}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    print("server stopped", file=sys.stderr)
    return 0
