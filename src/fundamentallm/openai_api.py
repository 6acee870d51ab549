"""OpenAI-compatible endpoints for `fundamentallm serve`, so any OpenAI client can talk to it.

    GET  /v1/models             the one model this server holds
    POST /v1/completions        prompt → text; OpenAI's parameters (below), stream or not
    POST /v1/chat/completions   messages → the assistant's reply, through CHAT_TEMPLATE

Parameters: prompt (a string, or a list of one), max_tokens (default 16, as OpenAI's),
temperature (default 1), top_p, n, stop (a string or up to 4), seed, presence_penalty,
frequency_penalty, stream, stream_options.include_usage, logprobs (completions: up to 5
alternatives per token), echo, user; anything else is refused, as OpenAI refuses it. Each
maps onto the same `SamplingOptions` as `generate`, so it means what the flag means.

Streaming is server-sent events of OpenAI's chunk objects, ending `data: [DONE]`. Replies
carry `usage` (prompt, completion and total tokens). Errors are OpenAI's error object,
`{"error": {"message", "type", "param", "code"}}`: 400 a bad request, 401 a missing or
wrong API key, 404 an unknown model or path, 413 a body over the limit.

A model fine-tuned on conversations (`--format chat`) gets its messages through its own chat
template (tokenizers/chat.py: turn tokens), and its reply ends at its end-of-turn token. A
model trained on plain text gets this template in plain text instead:

    {system message}\\n\\n        (if there is one)
    User: {content}\\n            (each user message)
    Assistant: {content}\\n       (each earlier reply)
    Assistant:                   (the model continues here; it stops at "\\nUser:")
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fundamentallm.errors import UserError
from fundamentallm.generation import Completion, TextGenerator
from fundamentallm.sampling import SamplingOptions
from fundamentallm.tokenizers.chat import ChatTemplate

CHAT_STOP = "\nUser:"
MAX_STOPS = 4
MAX_LOGPROBS = 5
COMMON = {"model", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "presence_penalty",
          "frequency_penalty", "stream", "stream_options", "user"}
COMPLETION_KEYS = COMMON | {"prompt", "logprobs", "echo"}
CHAT_KEYS = COMMON | {"messages"}
ROLES = ("system", "user", "assistant")


class APIError(Exception):
    """A request refused in OpenAI's terms: status, message, and the parameter at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": " ".join(str(self).split()), "type": self.kind,
                          "param": self.param, "code": self.code}}


def chat_prompt(messages: Any, template: ChatTemplate | None = None) -> str | list[int]:
    """What the model continues for a list of chat messages: the ids of its chat template, or
    for a model trained on plain text the text template above."""
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list", "messages")
    system, turns, plain = [], [], []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):  # content parts: only text can be read by a text model
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", "messages")
            content = "".join(p.get("text", "") for p in content)
        if role not in ROLES or not isinstance(content, str):
            raise APIError(400, f"messages[{i}] must have a role ({', '.join(ROLES)}) and text content",
                           "messages")
        plain.append({"role": role, "content": content})
        if role == "system":
            system.append(content)
        else:
            turns.append(f"{'User' if role == 'user' else 'Assistant'}: {content}\n")
    if template is not None:
        return template.prompt(plain)
    return ("\n".join(system) + "\n\n" if system else "") + "".join(turns) + "Assistant:"


def check_keys(body: dict[str, Any], allowed: set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise APIError(400, f"Unrecognized request argument supplied: {key}", key)


def sampling_options(body: dict[str, Any], limit: int, chat: bool) -> SamplingOptions:
    """OpenAI's parameters as our SamplingOptions; a bad value is a 400 naming it (`chat`: the
    plain-text template's, whose replies end where the next "User:" turn would begin)."""
    def number(name: str, default: Any, kind: type, low: float, high: float | None = None) -> Any:
        value = body.get(name)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise APIError(400, f"{name} must be {'an integer' if kind is int else 'a number'}", name)
        if value < low or (high is not None and value > high):
            raise APIError(400, f"{name} must be between {low} and {high}" if high is not None
                           else f"{name} must be at least {low}", name)
        return kind(value)

    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(isinstance(s, str) for s in stops):
        raise APIError(400, f"stop must be a string or a list of at most {MAX_STOPS} strings", "stop")
    top_p = number("top_p", 1.0, float, 0.0, 1.0)
    options = SamplingOptions(
        max_tokens=number("max_tokens", min(16, limit), int, 0, limit),
        temperature=number("temperature", 1.0, float, 0.0, 2.0),
        top_p=top_p if 0 < top_p < 1 else None,  # 1: the whole distribution; 0: greedy below
        num_samples=number("n", 1, int, 1, 16),
        seed=number("seed", None, int, 0, 2**63 - 1),
        presence_penalty=number("presence_penalty", 0.0, float, -2.0, 2.0),
        frequency_penalty=number("frequency_penalty", 0.0, float, -2.0, 2.0),
        stop=[s for s in stops if s] + ([CHAT_STOP] if chat else []),
    )
    if top_p == 0:
        options.temperature = 0.0
    try:
        options.check()
    except UserError as exc:
        raise APIError(400, str(exc)) from None
    return options


class Request:
    """One parsed /v1 request: the prompt, options and what the reply must contain."""

    def __init__(self, values: dict[str, Any], model_id: str, limit: int, chat: bool,
                 template: ChatTemplate | None = None):
        check_keys(values, CHAT_KEYS if chat else COMPLETION_KEYS)
        model = values.get("model")
        if not isinstance(model, str) or not model:
            raise APIError(400, f"model must be given: the id of a model this server has ({model_id!r})", "model")
        if model != model_id:
            raise APIError(404, f"The model {model!r} does not exist; this server has {model_id!r}", "model",
                           "model_not_found")
        self.chat, self.model = chat, model_id
        self.stop_ids = template.stop_ids if chat and template is not None else None  # None: the end of text
        if chat:
            self.prompt = chat_prompt(values.get("messages"), template)
        else:
            prompt = values.get("prompt")
            if isinstance(prompt, list) and len(prompt) == 1:
                prompt = prompt[0]
            if not isinstance(prompt, str) or not prompt:
                raise APIError(400, "prompt must be a non-empty string (or a list of one)", "prompt")
            self.prompt = prompt
        self.stream = values.get("stream") or False
        if not isinstance(self.stream, bool):
            raise APIError(400, "stream must be true or false", "stream")
        stream_options = values.get("stream_options") or {}
        if not isinstance(stream_options, dict):
            raise APIError(400, "stream_options must be an object", "stream_options")
        self.include_usage = bool(stream_options.get("include_usage"))
        self.echo = bool(values.get("echo"))
        logprobs = values.get("logprobs")
        if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)
                                     or not 0 <= logprobs <= MAX_LOGPROBS):
            raise APIError(400, f"logprobs must be an integer from 0 to {MAX_LOGPROBS}", "logprobs")
        self.logprobs = logprobs
        self.options = sampling_options(values, limit, chat and template is None)
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def envelope(self, choices: list[dict[str, Any]], chunk: bool = False) -> dict[str, Any]:
        kind = self.object + (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}

    def choice(self, index: int, text: str, finish: str | None, completion: Completion | None = None,
               delta: bool = False, first: bool = False) -> dict[str, Any]:
        if self.chat:
            body: dict[str, Any] = {"index": index, "finish_reason": finish, "logprobs": None}
            if delta:
                body["delta"] = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            else:
                body["message"] = {"role": "assistant", "content": text}
            return body
        text = (self.prompt + text) if self.echo and (not delta or first) else text
        return {"index": index, "text": text, "finish_reason": finish,
                "logprobs": logprobs_object(completion, self.echo) if completion is not None and
                self.logprobs is not None else None}


def logprobs_object(completion: Completion, echo: bool) -> dict[str, Any]:
    """OpenAI's legacy completions logprobs: each generated token, its log-probability, the
    most likely alternatives, and where it starts in the text."""
    offsets, at = [], 0
    for token in completion.token_texts:
        offsets.append(at)
        at += len(token)
    return {"tokens": completion.token_texts, "token_logprobs": completion.token_logprobs,
            "top_logprobs": completion.top_logprobs, "text_offset": offsets}


def usage(prompt_tokens: int, completions: list[Completion]) -> dict[str, int]:
    generated = sum(c.tokens for c in completions)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
            "total_tokens": prompt_tokens + generated}


def finish_reason(completion: Completion) -> str:
    return "stop" if completion.stop_reason == "stop" else "length"


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream_chunks(request: Request, events: Callable[[], Awaitable[Any]], first: Any, prompt_tokens: int,
                        should_stop: Callable[[], bool]) -> AsyncIterator[str]:
    """OpenAI's chunk stream from a generation's events: (sample, text) pieces, then the
    completions (one final chunk per choice with its finish_reason), usage, [DONE]."""
    started: set[int] = set()
    if request.chat or request.echo:  # the role (chat) or the echoed prompt comes first
        for i in range(request.options.num_samples):
            yield sse(request.envelope([request.choice(i, "", None, delta=True, first=True)], chunk=True))
            started.add(i)
    event = first
    try:
        while not isinstance(event, list):
            if should_stop():
                return
            sample, text = event
            yield sse(request.envelope([request.choice(sample, text, None, delta=True)], chunk=True))
            event = await events()
        for i, completion in enumerate(event):
            final = request.choice(i, "", finish_reason(completion), delta=True)
            if not request.chat and request.logprobs is not None:
                final["logprobs"] = logprobs_object(completion, False)
            yield sse(request.envelope([final], chunk=True))
        if request.include_usage:
            yield sse({**request.envelope([], chunk=True), "usage": usage(prompt_tokens, event)})
    except Exception as exc:  # headers are sent: report in-band, in OpenAI's shape
        yield sse(APIError(500, f"{type(exc).__name__}: {exc}".splitlines()[0], kind="server_error").body())
    yield "data: [DONE]\n\n"


def reply(request: Request, completions: list[Completion], prompt_tokens: int) -> dict[str, Any]:
    choices = [request.choice(i, c.text, finish_reason(c), c) for i, c in enumerate(completions)]
    return {**request.envelope(choices), "usage": usage(prompt_tokens, completions)}


def models_list(model_id: str, created: int, generator: TextGenerator) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created,
                                        "owned_by": "fundamentallm",
                                        "context_length": generator.model.cfg.context_length}]}
