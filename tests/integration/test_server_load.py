"""The server under load and abuse in CI: the bounded form of benchmarks/server_load.py on
the session's tiny model. Hundreds of requests from two dozen concurrent clients, well
formed, rude (disconnecting, reading a byte at a time, never finishing a body) and
malformed; every reply checked, /health timed throughout, memory measured over two rounds;
then clients that vanish, of every kind, each logged in one line and counted by /health.
The long form: `python benchmarks/server_load.py --requests 5000 --clients 64`."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import run_script, sample_text
from server_helpers import tiny_checkpoint

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it sends thousands of requests to a real server.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's RSS from /proc")]


def test_the_server_answers_every_request_rightly_under_load(tmp_path_factory):
    checkpoint = tiny_checkpoint(tmp_path_factory, sample_text())
    result = run_script("benchmarks/server_load.py", "--checkpoint", checkpoint, "--requests", "240",
                        "--clients", "24", "--max-concurrent", "6", "--json", timeout=900)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["passed"], json.dumps(report, indent=2)
    assert report["requests"] == 480 and report["wrong"] == {}
    kinds = {kind.split(":")[0] for kind in report["answered_correctly"]}
    assert {"generate", "generate stream", "openai", "openai stream", "disconnect mid-stream", "slow reader",
            "body never finishes", "rejected"} <= kinds
    assert report["slowest_health_s"] < 1.0 and report["health_failures"] == 0
    assert report["tracebacks"] == 0
    vanished = report["vanished"]  # clients that leave before the body, during it, while generating, mid-stream
    assert vanished["counted_by_health"] == vanished["clients"] == 5 * 6 + 6
    assert all(count == 5 for kind, count in vanished["counted_by_kind"].items() if kind != "filling every slot")
    assert vanished["log_lines_per_client"] == 1.0 and vanished["tracebacks"] == 0
    assert vanished["normal_request_after_every_slot_left"] == 200
