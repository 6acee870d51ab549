"""An interactive prompt loop over a trained model (`fundamentallm interactive CKPT`).

Type a prompt and the continuation streams in. Settings persist between prompts and are
changed with `/set name=value` (any sampling option, the same names as the `generate`
flags); Ctrl-C stops the current generation and returns to the prompt; Ctrl-D or `/quit`
leaves. Everything goes through `TextGenerator`, so an option means what it means everywhere.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import yaml

from fundamentallm.atomic import write_text
from fundamentallm.config.loading import class_fields
from fundamentallm.data.text import unescape
from fundamentallm.errors import UserError
from fundamentallm.generation import Completion, TextGenerator
from fundamentallm.sampling import SamplingOptions

COMMANDS = {
    "/help": "this list, and every option /set knows",
    "/set": "/set name=value [name=value ...], e.g. /set temperature=0.7 top_k=40 stop=\\n\\n",
    "/settings": "the current settings (/status too)",
    "/reset": "back to the settings the loop started with",
    "/save": "/save FILE: write this session's prompts and outputs to FILE",
    "/clear": "clear the screen",
    "/new": "--chat: start a new conversation (the system message stays)",
    "/quit": "leave (/exit and Ctrl-D too)",
}
CLEAR_SCREEN = "\033[2J\033[H"  # erase the terminal, cursor to the top left


def parse_value(info, text: str):
    """`/set` values as people type them: numbers, true/false, none; list options (stop,
    ban) take one text, with \\n and \\t understood (empty clears the list)."""
    if info.kind is list:
        return [unescape(text)] if text else []
    if text.lower() in ("", "none", "null"):
        return None
    return text if info.kind is str else yaml.safe_load(text)


class Repl:
    def __init__(self, generator: TextGenerator, options: SamplingOptions,
                 read: Callable[[str], str] = input, out: TextIO | None = None, chat: bool = False,
                 system: str | None = None):
        self.generator, self.start, self.options = generator, options, options
        # --chat: the conversation so far (OpenAI-style messages), rendered by the chat template
        self.chat, self.system = chat, system
        self.messages = self.opening()
        self.read, self.out = read, out or sys.stdout
        self.transcript: list[str] = []
        self.fields = {f.name: f for f in class_fields(SamplingOptions) if f.flag is not None}

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def run(self) -> int:
        try:
            import readline  # noqa: F401  (line editing and history for input(), where available)
        except ImportError:  # pragma: no cover - not on every platform
            pass
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C must stop a generation even when this process was started with SIGINT
            # ignored (as background jobs of a non-interactive shell are).
            signal.signal(signal.SIGINT, signal.default_int_handler)
        self.say("FundamentaLLM interactive: type a prompt; /help for commands, /quit to leave.")
        while True:
            try:
                line = self.read("> ")
            except EOFError:
                self.say()
                return 0
            except KeyboardInterrupt:  # at the prompt: a fresh line, as shells do
                self.say("^C")
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
            elif line.strip():
                self.generate(unescape(line))

    def command(self, line: str) -> bool:
        """Run one /command; False means leave."""
        try:
            name, *args = shlex.split(line)
        except ValueError as exc:
            self.say(f"error: {exc}")
            return True
        if name in ("/quit", "/exit"):
            return False
        try:
            if name == "/help":
                self.show_help()
            elif name == "/set":
                self.set(args)
            elif name in ("/settings", "/status"):
                self.show_settings()
            elif name == "/clear":
                self.say(CLEAR_SCREEN, end="")
            elif name == "/new":
                self.messages = self.opening()
                self.say("a new conversation" if self.chat else "error: /new starts a new conversation with --chat")
            elif name == "/reset":
                self.options = self.start
                self.say("settings reset")
            elif name == "/save":
                self.save(args)
            else:
                self.say(f"error: unknown command {name}; /help lists them")
        except UserError as exc:
            self.say(f"error: {exc}")
        return True

    def set(self, args: list[str]) -> None:
        if not args or any("=" not in a for a in args):
            raise UserError("/set takes name=value pairs, e.g. /set temperature=0.7")
        values = {}
        for arg in args:
            name, text = arg.split("=", 1)
            info = self.fields.get(name.replace("-", "_"))
            if info is None:
                raise UserError(f"/set: unknown option {name!r} (/help lists them)")
            try:
                values[info.name] = parse_value(info, text)
            except yaml.YAMLError:
                raise UserError(f"/set: cannot read {text!r} as a value for {name}") from None
        self.options = self.options.updated(values, source="/set")
        self.say(", ".join(f"{k} = {getattr(self.options, k)!r}" for k in values))

    def show_settings(self) -> None:
        for name in self.fields:
            self.say(f"  {name} = {getattr(self.options, name)!r}")

    def show_help(self) -> None:
        for name, text in COMMANDS.items():
            self.say(f"  {name:<10} {text}")
        self.say("options:")
        for name, info in self.fields.items():
            self.say(f"  {name:<19} {info.meta['help']}")

    def save(self, args: list[str]) -> None:
        if len(args) != 1:
            raise UserError("/save takes one file name")
        write_text(Path(args[0]), "".join(self.transcript))
        self.say(f"saved {len(self.transcript)} exchange(s) to {args[0]}")

    def opening(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}] if self.system else []

    def generate(self, prompt: str) -> None:
        _, unknown = self.generator.encode_prompt(prompt)
        if unknown:
            self.say(f"note: {unknown} prompt character(s) never seen in training were replaced by <unk>")
        live = self.options.num_samples == 1 and self.options.beam_width == 1
        shown = ""
        ids: str | list[int] = prompt
        stops = None
        if self.chat:  # the reply to the conversation so far, ended by the model's end of turn
            self.messages.append({"role": "user", "content": prompt})
            ids, stops = self.generator.template.prompt(self.messages), self.generator.template.stop_ids
        try:
            if live and not self.chat:
                self.say(prompt, end="")
            for event in self.generator.stream(ids, dataclasses.replace(self.options), stop_ids=stops):
                if isinstance(event, list):
                    self.finish(prompt, event, live)
                elif live:
                    shown += event[1]
                    self.say(event[1], end="")
        except KeyboardInterrupt:
            self.say("\n[stopped]")
            self.transcript.append(f"{prompt}{shown}\n[stopped]\n\n")
        except UserError as exc:
            self.say(f"\nerror: {exc}")

    def finish(self, prompt: str, completions: list[Completion], live: bool) -> None:
        if self.chat:  # the first sample's reply is the one the conversation goes on with
            self.messages.append({"role": "assistant", "content": completions[0].text})
        if live:
            self.say()
        else:
            for i, c in enumerate(completions, 1):
                self.say(f"--- sample {i} ---\n{prompt}{c.text}")
        self.transcript.extend(f"{prompt}{c.text}\n\n" for c in completions)
