"""`fundamentallm generate` with every sampling option, and `interactive` through a pseudo terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from integration_helpers import ROOT, assert_one_line_error, process_env, run_cli, run_process, train


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_text) -> Path:
    root = tmp_path_factory.mktemp("model")
    data = root / "train.txt"
    data.write_text(tiny_text, encoding="utf-8")
    # Muon at 0.05, 100 steps of 8: its greedy text holds line breaks and words (the --stop
    # "\\n" test needs a line break, the stop-string tests a varied text)
    return train(data, root / "run", max_steps=100, batch_size=8, warmup_steps=0, learning_rate=0.01,
                 muon_lr=0.05) / "final.pt"


def generate(capsys, ckpt: Path, *flags: str) -> str:
    capsys.readouterr()
    assert run_cli("generate", ckpt, "--device", "cpu", *flags) == 0
    return capsys.readouterr().out


def samples(capsys, ckpt: Path, *flags: str) -> list[dict]:
    return json.loads(generate(capsys, ckpt, "--json", *flags))["samples"]


def test_json_reports_text_tokens_logprob_and_speed_per_sample(ckpt, capsys):
    out = samples(capsys, ckpt, "--prompt", "To", "--max-tokens", "20", "--num-samples", "3", "--seed", "1")
    assert len(out) == 3
    for s in out:
        assert set(s) == {"text", "tokens", "mean_logprob", "tokens_per_s", "stop_reason"}
        assert s["tokens"] == 20 and len(s["text"]) == 20 and s["stop_reason"] == "length"
        assert s["mean_logprob"] < 0 and s["tokens_per_s"] > 0


def test_greedy_flag_equals_temperature_zero(ckpt, capsys):
    a = generate(capsys, ckpt, "--greedy", "--max-tokens", "30", "--seed", "4")
    b = generate(capsys, ckpt, "--temperature", "0", "--max-tokens", "30", "--seed", "5")
    assert a == b


def test_beam_width_one_is_greedy_and_wider_beams_are_likelier(ckpt, capsys):
    greedy = samples(capsys, ckpt, "--greedy", "--max-tokens", "15", "--prompt", "Th")[0]
    beam1 = samples(capsys, ckpt, "--beam-width", "1", "--greedy", "--max-tokens", "15", "--prompt", "Th")[0]
    beam4 = samples(capsys, ckpt, "--beam-width", "4", "--max-tokens", "15", "--prompt", "Th")[0]
    assert beam1["text"] == greedy["text"]
    assert beam4["mean_logprob"] >= greedy["mean_logprob"] - 1e-6
    assert_one_line_error(run_process("generate", ckpt, "--beam-width", "2", "--num-samples", "2"))


def test_stop_strings_end_the_output_exactly(ckpt, capsys):
    full = samples(capsys, ckpt, "--greedy", "--max-tokens", "80", "--prompt", "A")[0]["text"]
    stop = full[20:22]
    cut = samples(capsys, ckpt, "--greedy", "--max-tokens", "80", "--prompt", "A", "--stop", "zzz",
                  "--stop", stop)[0]
    assert cut["text"] == full[:full.index(stop)] and cut["stop_reason"] == "stop"
    # streamed to the terminal, the output ends there too
    assert generate(capsys, ckpt, "--greedy", "--max-tokens", "80", "--prompt", "A", "--stop", stop) \
        == "A" + full[:full.index(stop)] + "\n"


def test_stop_typed_with_backslash_n_means_a_newline(ckpt, capsys):
    full = samples(capsys, ckpt, "--greedy", "--max-tokens", "120", "--prompt", "A")[0]["text"]
    assert "\n" in full
    cut = samples(capsys, ckpt, "--greedy", "--max-tokens", "120", "--prompt", "A", "--stop", "\\n")[0]
    assert cut["text"] == full[:full.index("\n")]


def test_banned_characters_never_appear(ckpt, capsys):
    out = samples(capsys, ckpt, "--max-tokens", "150", "--temperature", "1.5", "--seed", "2",
                  "--num-samples", "4", "--ban", "e", "--ban", " ")
    assert all("e" not in s["text"] and " " not in s["text"] for s in out)


def test_penalties_and_min_p_change_the_text(ckpt, capsys):
    base = ["--max-tokens", "60", "--temperature", "1.0", "--seed", "3"]
    plain = generate(capsys, ckpt, *base)
    for flags in (["--repetition-penalty", "2"], ["--frequency-penalty", "1"], ["--presence-penalty", "2"],
                  ["--min-p", "0.3"]):
        assert generate(capsys, ckpt, *base, *flags) != plain, flags


def test_prompt_file_and_output_file(ckpt, capsys, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ROMEO:\n")
    out = tmp_path / "out.txt"
    assert run_cli("generate", ckpt, "--device", "cpu", "--prompt-file", prompt, "--greedy",
                   "--max-tokens", "25", "--output", out) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote {out}" in captured.err
    expected = generate(capsys, ckpt, "--prompt", "ROMEO:\n", "--greedy", "--max-tokens", "25")
    assert out.read_text() == expected


@pytest.mark.parametrize("flags, message", [
    (["--min-p", "0"], "--min-p must be above 0"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be between 0.0001 and 10,000"),
    (["--ban", "nope"], "neither one character nor one token"),
    (["--prompt", "x", "--prompt-file", "y"], "not allowed with argument"),
])
def test_bad_options_are_one_line_errors(ckpt, flags, message):
    assert message in assert_one_line_error(run_process("generate", ckpt, "--device", "cpu", *flags))


# ------------------------------------------------------------------ interactive, through a pty
class Terminal:
    """A real process on a pseudo terminal: what a person at a keyboard would see."""

    def __init__(self, *argv: str):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: becomes the program, the pty its controlling terminal
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as in a terminal, whatever runs the tests
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "fundamentallm", *argv], process_env())
        self.seen = ""

    def read_until(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited for {text!r}; the terminal shows:\n{self.seen[-2000:]}")
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536).decode("utf-8", errors="replace")
                except OSError:  # the child closed the terminal
                    break
        found = self.seen.index(text) + len(text)
        before, self.seen = self.seen[:found], self.seen[found:]
        return before

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self) -> int:
        for _ in range(100):
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the REPL did not exit")


def test_interactive_keeps_settings_streams_and_survives_ctrl_c(ckpt, tmp_path):
    term = Terminal("interactive", str(ckpt), "--device", "cpu", "--greedy", "--max-tokens", "20")
    try:
        term.read_until("> ")
        term.send("/set max_tokens=5 stop=zzz\n")
        assert "max_tokens = 5" in term.read_until("> ")
        term.send("/settings\n")
        settings = term.read_until("> ")
        assert "greedy = True" in settings and "max_tokens = 5" in settings and "stop = ['zzz']" in settings
        term.send("To be\n")
        first = term.read_until("> ")
        term.send("To be\n")
        assert term.read_until("> ") == first  # greedy: the same continuation, 5 tokens
        echo, output = first.split("\r\n")[:2]  # the terminal echoes the typed line
        assert echo == "To be" and output.startswith("To be") and len(output) > len("To be")
        term.send("/set temperature=-1\n")
        assert "error: /set: temperature must be 0 (greedy) or between 0.0001 and 10,000" in term.read_until("> ")
        # a long generation, stopped with Ctrl-C: back at the prompt, settings kept
        term.send("/set max_tokens=1000000 greedy=false temperature=1.0\n")
        term.read_until("> ")
        term.send("A\n")
        term.read_until("A")
        time.sleep(1.0)
        term.send("\x03")
        assert "[stopped]" in term.read_until("> ")
        term.send("/reset\n")
        term.read_until("> ")
        term.send("/settings\n")
        assert "max_tokens = 20" in term.read_until("> ")
        transcript = tmp_path / "session.txt"
        term.send(f"/save {transcript}\n")
        assert "saved 3 exchange(s)" in term.read_until("> ")
        assert transcript.read_text().startswith(output + "\n\n")
        term.send("/nope\n")
        assert "unknown command /nope" in term.read_until("> ")
        # the original FundamentaLLM's spellings: /status shows the settings, /clear the screen
        term.send("/status\n")
        assert "max_tokens = 20" in term.read_until("> ")
        term.send("/clear\n")
        assert "\x1b[2J" in term.read_until("> ")
        term.send("/exit\n")
        assert term.close() == 0
    finally:
        try:
            os.kill(term.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_generate_interactive_flag_and_ctrl_d(ckpt):
    term = Terminal("generate", str(ckpt), "--device", "cpu", "--interactive", "--greedy", "--max-tokens", "3")
    term.read_until("> ")
    term.send("Hi\n")
    assert term.read_until("> ").startswith("Hi")
    term.send("\x04")  # Ctrl-D at an empty prompt: leave
    assert term.close() == 0


def test_output_file_is_the_original_spelling_of_output(ckpt, capsys, tmp_path):
    flags = ("--greedy", "--max-tokens", "20", "--prompt", "A")
    assert run_cli("generate", ckpt, *flags, "--output", tmp_path / "a.txt") == 0
    assert run_cli("generate", ckpt, *flags, "--output-file", tmp_path / "b.txt") == 0
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() != ""
