#!/usr/bin/env python
"""The server under load and abuse, measured: a real `fundamentallm serve` on loopback.

Dozens of concurrent clients send hundreds of requests, a mix of:

- well formed: /generate and /v1/completions, /v1/chat/completions, plain and streaming;
- rude: clients that disconnect mid-stream, slow clients that read one byte at a time, a
  body that never finishes (the server's --body-timeout frees it: 408);
- malformed: bad JSON, a body that is not UTF-8, wrong types, a huge max_tokens, deeply
  nested JSON, a body over the size limit;

while a watcher asks /health every 50 ms and samples the server's memory (RSS). Then clients
that vanish, each kind in turn: they close or reset the connection before the body, halfway
through it, after sending a request while it waits or runs (half-closing their side), or in
the middle of a stream. The report gives the log lines and tracebacks per vanished client
(goal: one line, the request's own, and no traceback), whether /health counted each
(`clients_left`), and whether a normal request is served at once after clients that vanish
have filled every admission slot. Each reply
is checked against what it must be: every well-formed request answered correctly (a 503
with Retry-After, when --max-concurrent requests are already in, is retried after it, as a
polite client does), every malformed one with its 4xx. Then the same load runs a second time: memory after the second round must not be
above the first's by more than a margin (it does not grow without bound). The server's
stderr must hold no traceback.

    python benchmarks/server_load.py --json                                  # bounded (CI)
    python benchmarks/server_load.py --requests 5000 --clients 64 --json     # the long form

Trains a tiny model first unless given `--checkpoint`. Exit status 1 when any check failed.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from fundamentallm.errors import ArgumentParser, UserError, run_reporting_errors

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "shakespeare_sample.txt"
MEMORY_MARGIN_MB = 40  # allowed growth from the first round to the second (allocator slack)


def process_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def fundamentallm(*argv: str | Path) -> list[str]:
    return [sys.executable, "-m", "fundamentallm", *map(str, argv)]


def tiny_model(work: Path) -> Path:
    corpus = work / "train.txt"
    corpus.write_text(SAMPLE.read_text(encoding="utf-8")[:20_000], encoding="utf-8")
    subprocess.run(fundamentallm("train", corpus, "-o", work / "model", "--model-dim", "32", "--num-layers", "2",
                                 "--num-heads", "2", "--context-length", "32", "--max-steps", "30", "--device",
                                 "cpu", "--no-compile", "--precision", "fp32", "--quiet"),
                   check=True, cwd=ROOT, env=process_env(), timeout=600)
    return work / "model" / "final.pt"


class Server:
    def __init__(self, checkpoint: Path, log: Path, *extra: str):
        self.log = log
        self.proc = subprocess.Popen(fundamentallm("serve", checkpoint, "--port", "0", "--device", "cpu", *extra),
                                     stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=ROOT,
                                     env=process_env())
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stdout], daemon=True).start()
        first = lines.get(timeout=120)
        if not first.startswith("serving on http://"):
            raise RuntimeError(f"the server did not start: {first!r} {log.read_text()[-500:]}")
        self.host, port = first.split("//")[1].strip().rsplit(":", 1)
        self.port = int(port)
        self.busy = 0  # 503s seen (each retried after its Retry-After)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        conn.request("GET", "/v1/models")
        self.model_id = json.loads(conn.getresponse().read())["data"][0]["id"]
        conn.close()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# ---------------------------------------------------------------- the clients
# Each returns (kind, outcome): outcome "ok" when the reply was exactly what it must be,
# "busy" for a 503 with Retry-After, or a string saying what was wrong.

BUSY_RETRIES = 4  # a polite client retries a 503 after its Retry-After, a few times


def post(server: Server, path: str, body: bytes, timeout: float = 60) -> tuple[int, Any, bytes]:
    """POST, retrying a 503 (busy) after the Retry-After it names; (status, headers, body)."""
    for attempt in range(BUSY_RETRIES + 1):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            status, headers, data = reply.status, reply.headers, reply.read()
        finally:
            conn.close()
        if status != 503:
            break
        server.busy += 1
        wait = headers.get("Retry-After")
        if not (wait and wait.isdigit()) or attempt == BUSY_RETRIES:
            break
        time.sleep(int(wait))
    return status, headers, data


def judged(kind: str, status: int, headers: Any, check: Callable[[], bool]) -> tuple[str, str]:
    if status == 503:
        return kind, "busy" if headers.get("Retry-After") else "503 without Retry-After"
    try:
        return kind, "ok" if check() else f"unexpected reply (status {status})"
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return kind, f"unreadable reply (status {status}): {exc}"


def generate_plain(server: Server, rng: random.Random) -> tuple[str, str]:
    n = rng.randint(1, 3)
    status, headers, body = post(server, "/generate", json.dumps(
        {"prompt": "ROMEO:", "max_tokens": rng.randint(1, 24), "num_samples": n, "seed": rng.randrange(99)}).encode())
    return judged("generate", status, headers,
                  lambda: status == 200 and len(json.loads(body)["samples"]) == n)


def generate_stream(server: Server, rng: random.Random) -> tuple[str, str]:
    status, headers, body = post(server, "/generate", json.dumps(
        {"prompt": "ROMEO:", "max_tokens": rng.randint(1, 24), "stream": True}).encode())
    return judged("generate stream", status, headers,
                  lambda: status == 200 and b"event: done" in body and b"event: error" not in body)


def openai_plain(server: Server, rng: random.Random) -> tuple[str, str]:
    chat = rng.random() < 0.5
    payload = ({"messages": [{"role": "user", "content": "Speak."}]} if chat else {"prompt": "ROMEO:"})
    status, headers, body = post(server, "/v1/chat/completions" if chat else "/v1/completions", json.dumps(
        {"model": server.model_id, "max_tokens": rng.randint(1, 16), **payload}).encode())
    return judged("openai", status, headers, lambda: status == 200 and json.loads(body)["choices"]
                  and json.loads(body)["usage"]["completion_tokens"] >= 0)


def openai_stream(server: Server, rng: random.Random) -> tuple[str, str]:
    status, headers, body = post(server, "/v1/completions", json.dumps(
        {"model": server.model_id, "prompt": "ROMEO:", "max_tokens": rng.randint(1, 16), "stream": True}).encode())
    return judged("openai stream", status, headers, lambda: status == 200 and body.rstrip().endswith(b"data: [DONE]"))


def raw(server: Server, request: bytes, timeout: float = 30) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.sendall(request)
    return sock


def streaming_request(max_tokens: int) -> bytes:
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": max_tokens, "stream": True}).encode()
    return (b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def disconnect_mid_stream(server: Server, rng: random.Random) -> tuple[str, str]:
    sock = raw(server, streaming_request(200))
    try:
        head = sock.recv(64)  # the status line has come: the stream has started (or been refused)
    finally:
        sock.close()  # and the client is gone
    return "disconnect mid-stream", "ok" if head.startswith(b"HTTP/1.1 ") else f"no reply: {head!r}"


def slow_reader(server: Server, rng: random.Random) -> tuple[str, str]:
    sock = raw(server, streaming_request(8))
    received = b""
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not received.endswith(b"0\r\n\r\n"):
            byte = sock.recv(1)  # one byte at a time
            if not byte:
                break
            received += byte
            time.sleep(0.001)
    finally:
        sock.close()
    if received.startswith(b"HTTP/1.1 503"):
        return "slow reader", "busy"
    return "slow reader", "ok" if received.startswith(b"HTTP/1.1 200") else f"reply {received[:40]!r}"


def body_never_finishes(server: Server, rng: random.Random) -> tuple[str, str]:
    sock = raw(server, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 500\r\n\r\n{\"prompt\": \"ROM")
    try:
        reply = sock.recv(200)
    except socket.timeout:
        reply = b""
    finally:
        sock.close()
    return "body never finishes", "ok" if reply.startswith(b"HTTP/1.1 408") else f"reply {reply[:40]!r}"


BAD_BODIES: dict[str, tuple[bytes, int]] = {
    "malformed JSON": (b'{"prompt": "ROMEO:",', 400),
    "not UTF-8": (b'{"prompt": "\xff\xfe caf\xe9"}', 400),
    "wrong types": (b'{"prompt": 5, "max_tokens": "many"}', 422),
    "huge max_tokens": (b'{"prompt": "ROMEO:", "max_tokens": 1000000000}', 422),
    "nested JSON": (b"[" * 30_000 + b"]" * 30_000, 400),
    "huge JSON": (json.dumps({"prompt": "x" * 200_000}).encode(), 413),
    "not an object": (b"[1, 2, 3]", 422),
}


def malformed(server: Server, rng: random.Random) -> tuple[str, str]:
    case = rng.choice(list(BAD_BODIES))
    body, expected = BAD_BODIES[case]
    path = rng.choice(["/generate", "/v1/completions"])
    if path.startswith("/v1/") and expected == 422:
        expected = 400  # OpenAI's API answers 400 for any request it cannot serve
    status, _, reply = post(server, path, body)
    try:
        error = json.loads(reply)["error"]
        message = error["message"] if isinstance(error, dict) else error  # OpenAI's object, or ours
        one_line = isinstance(message, str) and message.strip() != "" and "\n" not in message
    except (ValueError, KeyError, TypeError):
        one_line = False
    return f"rejected: {case}", "ok" if status == expected and one_line else f"status {status}, expected {expected}"


# ---------------------------------------------------------------- clients that vanish
# Each sends part or all of a request, then leaves without reading the reply.

def reset(sock: socket.socket) -> None:
    """Close with a TCP reset (RST) instead of an orderly close (FIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def plain_request(max_tokens: int) -> bytes:
    body = json.dumps({"prompt": "ROMEO:", "max_tokens": max_tokens}).encode()
    return (b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


PARTIAL_HEAD = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"


def gone_before_body(server: Server) -> None:
    sock = raw(server, PARTIAL_HEAD)
    time.sleep(0.05)  # the server has read the head and waits for the body
    sock.close()


def gone_during_body(server: Server) -> None:
    sock = raw(server, PARTIAL_HEAD + b'{"prompt": "ROM')
    time.sleep(0.05)
    sock.close()


def reset_during_body(server: Server) -> None:
    sock = raw(server, PARTIAL_HEAD + b'{"prompt": "ROM')
    time.sleep(0.05)
    reset(sock)


def half_closed(server: Server) -> None:
    sock = raw(server, plain_request(256))
    sock.shutdown(socket.SHUT_WR)  # nothing more to send; the reply is never read
    time.sleep(0.05)
    sock.close()


def gone_while_generating(server: Server) -> None:
    sock = raw(server, plain_request(256))
    time.sleep(0.05)
    sock.close()


def gone_mid_stream(server: Server) -> None:
    sock = raw(server, streaming_request(256))
    sock.recv(64)  # the stream has begun
    reset(sock)


VANISHING: list[Callable[[Server], None]] = [gone_before_body, gone_during_body, reset_during_body, half_closed,
                                              gone_while_generating, gone_mid_stream]


def health(server: Server) -> dict[str, Any]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_for_departures(server: Server, count: int, timeout: float = 30) -> int:
    """/health's clients_left once it reaches `count` (or the last seen, after `timeout` s)."""
    deadline = time.monotonic() + timeout
    seen = health(server)["clients_left"]
    while seen < count and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = health(server)["clients_left"]
    return seen


def settled(log: Path, quiet: float = 1.5, timeout: float = 30) -> None:
    """Wait until no request line has reached the log for `quiet` s: a client of the load rounds
    that already gave up (a dropped stream, a body cut short) is logged when the server notices,
    up to the 1 s body timeout later, and must not be counted as a vanishing client's line."""
    deadline, size, since = time.monotonic() + timeout, -1, time.monotonic()
    while time.monotonic() < deadline:
        now = sum(not line.startswith("GET /health ") for line in log.read_text().splitlines())
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def vanishing_round(server: Server, log: Path, each: int, max_concurrent: int) -> dict[str, Any]:
    """`each` clients of every vanishing kind, then `max_concurrent` that fill every admission
    slot and leave, then one normal request: what the log and /health show."""
    settled(log)
    start_lines, start_count = len(log.read_text().splitlines()), health(server)["clients_left"]
    kinds = {}
    for client in VANISHING:
        before = health(server)["clients_left"]
        for _ in range(each):
            client(server)
        kinds[client.__name__] = wait_for_departures(server, before + each) - before
    before = health(server)["clients_left"]
    with ThreadPoolExecutor(max_concurrent) as pool:  # every slot taken by a client that then leaves
        list(pool.map(lambda _: gone_while_generating(server), range(max_concurrent)))
    kinds["filling every slot"] = wait_for_departures(server, before + max_concurrent) - before
    busy = server.busy
    status, _, _ = post(server, "/generate", json.dumps({"prompt": "ROMEO:", "max_tokens": 4}).encode())
    status = 503 if server.busy > busy else status  # served at once: not after a retry
    vanished = each * len(VANISHING) + max_concurrent
    time.sleep(0.2)  # the normal request's own log line
    lines = log.read_text().splitlines()[start_lines:]
    lines = [line for line in lines if not line.startswith("GET /health ")]
    return {"clients": vanished, "counted_by_health": health(server)["clients_left"] - start_count,
            "counted_by_kind": kinds,
            "log_lines_per_client": round((len(lines) - 1) / vanished, 2),  # less the normal request's
            "tracebacks": sum("Traceback" in line for line in lines),
            "normal_request_after_every_slot_left": status}


CLIENTS: list[tuple[Callable[[Server, random.Random], tuple[str, str]], int]] = [
    (generate_plain, 6), (generate_stream, 5), (openai_plain, 4), (openai_stream, 3),
    (disconnect_mid_stream, 2), (slow_reader, 1), (body_never_finishes, 1), (malformed, 6),
]


class Watcher(threading.Thread):
    """/health every 50 ms (its slowest reply) and the server's RSS (its peak)."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server, self.stop_event = server, threading.Event()
        self.slowest_health_s, self.health_failures, self.checks, self.peak_rss_mb = 0.0, 0, 0, 0.0

    def run(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=10)
                conn.request("GET", "/health")
                ok = conn.getresponse().status == 200
                conn.close()
            except OSError:
                ok = False
            self.slowest_health_s = max(self.slowest_health_s, time.monotonic() - started)
            self.health_failures += not ok
            self.checks += 1
            self.peak_rss_mb = max(self.peak_rss_mb, self.server.rss_mb())
            self.stop_event.wait(0.05)


def one_round(server: Server, requests: int, clients: int, seed: int) -> Counter:
    rng = random.Random(seed)
    kinds = [c for c, weight in CLIENTS for _ in range(weight)]
    plan = [(rng.choice(kinds), random.Random(rng.randrange(1 << 30))) for _ in range(requests)]

    def attempt(job) -> tuple[str, str]:
        client, job_rng = job
        try:
            return client(server, job_rng)
        except OSError as exc:
            return client.__name__, f"connection failed: {exc}"

    with ThreadPoolExecutor(clients) as pool:
        return Counter(pool.map(attempt, plan))


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description="Load and abuse a real server on loopback; check every reply.")
    p.add_argument("--requests", type=int, default=240, help="requests per round (two rounds)")
    p.add_argument("--clients", type=int, default=24, help="concurrent clients")
    p.add_argument("--max-concurrent", type=int, default=8, help="the server's --max-concurrent")
    p.add_argument("--checkpoint", type=Path, help="the model to serve (default: train a tiny one)")
    p.add_argument("--vanishing", type=int, default=5, help="clients of each vanishing kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    def work() -> int:
        if args.requests < 1 or args.clients < 1 or args.vanishing < 1:
            raise UserError("--requests, --clients and --vanishing must be at least 1")
        root = Path(tempfile.mkdtemp(prefix="server-load-"))
        try:
            checkpoint = args.checkpoint or tiny_model(root)
            server = Server(checkpoint, root / "server.log", "--max-concurrent", str(args.max_concurrent),
                            "--body-timeout", "1", "--max-tokens-limit", "256")
            watcher = Watcher(server)
            watcher.start()
            started = time.monotonic()
            try:
                first = one_round(server, args.requests, args.clients, args.seed)
                after_first = server.rss_mb()
                second = one_round(server, args.requests, args.clients, args.seed + 1)
                after_second = server.rss_mb()
                vanished = vanishing_round(server, root / "server.log", args.vanishing, args.max_concurrent)
            finally:
                watcher.stop_event.set()
                watcher.join()
                status = server.stop()
            log = (root / "server.log").read_text()
            outcomes = first + second
            wrong = {f"{kind}: {outcome}": n for (kind, outcome), n in outcomes.items() if outcome not in ("ok", "busy")}
            result = {
                "requests": sum(outcomes.values()),
                "clients": args.clients,
                "max_concurrent": args.max_concurrent,
                "seconds": round(time.monotonic() - started, 1),
                "answered_correctly": {k: n for (k, o), n in sorted(outcomes.items()) if o == "ok"},
                "busy_503_seen": server.busy,
                "busy_after_retries": sum(n for (_, o), n in outcomes.items() if o == "busy"),
                "wrong": wrong,
                "health_checks": watcher.checks,
                "health_failures": watcher.health_failures,
                "slowest_health_s": round(watcher.slowest_health_s, 3),
                "rss_mb": {"peak": round(watcher.peak_rss_mb, 1), "after_round_1": round(after_first, 1),
                           "after_round_2": round(after_second, 1)},
                "tracebacks": log.count("Traceback"),
                "vanished": vanished,
                "server_exit_status": status,
            }
            result["passed"] = (not wrong and watcher.health_failures == 0 and watcher.slowest_health_s < 1.0
                                and after_second <= after_first + MEMORY_MARGIN_MB and result["tracebacks"] == 0
                                and vanished["counted_by_health"] == vanished["clients"]
                                and vanished["log_lines_per_client"] <= 1 and vanished["tracebacks"] == 0
                                and vanished["normal_request_after_every_slot_left"] == 200
                                and status == 0)
            if not result["passed"] and log.strip():
                result["server_log_tail"] = log[-1500:]
        finally:
            shutil.rmtree(root, ignore_errors=True)
        print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
        return 0 if result["passed"] else 1

    return run_reporting_errors(work)


if __name__ == "__main__":
    sys.exit(main())
