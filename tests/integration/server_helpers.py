"""A real `fundamentallm serve` process on a tiny model, for the server and web page tests."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from integration_helpers import fundamentallm_command, process_env, train

PROMPT = "First Citizen:"


def tiny_checkpoint(tmp_path_factory, text: str) -> Path:
    """A tiny model that has learnt enough to write words, trained once per session and
    shared by the server test modules (8 seconds or so)."""
    root = tmp_path_factory.getbasetemp() / "served-model"
    if not (root / "run" / "final.pt").is_file():
        root.mkdir(exist_ok=True)
        (root / "train.txt").write_text(text, encoding="utf-8")
        train(root / "train.txt", root / "run", max_steps=100, batch_size=8, warmup_steps=0,
              learning_rate=0.01, eval_interval=100)
    return root / "run" / "final.pt"


class ServerProcess:
    """`python -m fundamentallm serve CKPT --port 0`; `.url` once it listens."""

    def __init__(self, checkpoint: Path, *extra: str, log: Path):
        self.log = log
        self.process = subprocess.Popen(
            fundamentallm_command("serve", checkpoint, "--port", "0", "--device", "cpu", *extra),
            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=process_env())
        self.lines: queue.Queue[str] = queue.Queue()  # stdout, line by line
        lines = self.lines
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout],
                         daemon=True).start()
        try:
            first = lines.get(timeout=90)
        except queue.Empty:
            self.stop()
            pytest.fail(f"the server printed nothing in 90 s; stderr: {self.stderr()}")
        assert first.startswith("serving on http://127.0.0.1:"), (first, self.stderr())
        self.url = first.split()[-1]

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def serving(checkpoint: Path, log: Path, *extra: str):
    """A module's server: started, yielded, then stopped with SIGTERM (what a service manager
    sends), which must be a clean stop: status 0, no traceback."""
    served = ServerProcess(checkpoint, *extra, log=log)
    yield served
    assert served.stop(signal.SIGTERM) == 0, served.stderr()
    assert "Traceback" not in served.stderr(), served.stderr()
