"""The troubleshooting page is the catalog of every error and warning the program can print.

The messages are read from the source of the package and of scripts/ with `ast`: the first
argument of every call to `UserError` (or one of its subclasses, DamagedCheckpoint,
WriteFailed, LostProcesses), the text returned by the few functions that build part of one
(MESSAGE_PARTS), the `error: ...` lines printed directly (the multi-process launcher's), and
the warnings: those collected in WARNING_LISTS and the training run's events. An f-string
is a template: its literal parts are the message, its `{...}` fields placeholders. Each
template must match a row of the page (`| `message` | cause | fix |`), where the row writes
the placeholders as FILE, N, X..., and each row must match a template (or, in the
"Command-line usage" section, be made of argparse's own strings), so that a message
added, reworded or removed in the code and not on the page fails here.
"""

from __future__ import annotations

import argparse
import ast
import re
from dataclasses import dataclass
from pathlib import Path

from helpers import ROOT

PACKAGE = ROOT / "src" / "fundamentallm"
SCRIPTS = ROOT / "scripts"
PAGE = ROOT / "docs" / "guides" / "troubleshooting.md"
# | `message` | cause | fix |, the message in ``double`` backticks where it holds one
ROW = re.compile(r"^\| (`+) ?(.+?) ?\1 \|([^|]+)\|([^|]+)\|\s*$")
USAGE_SECTION = "## Command-line usage"

# Functions whose returned strings become (part of) a message.
MESSAGE_PARTS = {"checkpoint.py:unreadable"}

# Functions that collect warnings in a list (`found.append(...)`), printed as `warning: ...`
# (a gradient warning after `step N: `).
WARNING_LISTS = {"config/loading.py:config_warnings", "training/gradients.py:warnings",
                 "experiments.py:compare_runs", "experiments.py:load_run"}

# Messages that only pass on another one, each with the reason it needs no row of its own.
WRAPPERS = {
    "cli/__init__.py:load_any_tokenizer": "names the checkpoint before a tokenizer message caught from load_checkpoint",
    "checkpoint.py:load_checkpoint": "names the file before unreadable(), whose texts are templates",
    "checkpoint.py:model_from_checkpoint": "names the checkpoint before a tokenizer message",
    "data/chat.py:read_conversations": "names the file and line before a chat template's message about the messages",
    "hf/directory.py:read_model_directory": "names config.json or the directory before an architecture "
                                                 "or config message",
    "tokenizers/__init__.py:load_tokenizer_file": "names the file before a tokenizer message",
    "training/distributed.py:on_main": "every process raises the message rank 0 raised",
    "training/start.py:load_checkpoint_to_resume": "re-raises the damaged checkpoint's own message when there is "
                                                   "no other checkpoint",
}


@dataclass(frozen=True)
class Template:
    where: str  # module:function
    line: int
    parts: tuple[str, ...]  # literal text between placeholders; parts[0] before the first

    @property
    def text(self) -> str:
        return "{}".join(self.parts)

    @property
    def pattern(self) -> re.Pattern:
        return re.compile(".*".join(re.escape(p) for p in self.parts), re.S)

    @property
    def literal(self) -> int:
        return len("".join(self.parts))

    @property
    def wrapper(self) -> bool:
        return not re.sub(r"[\W_]", "", "".join(self.parts))


def literal_parts(node: ast.AST) -> list[str]:
    """The text of a message expression with each computed part as a placeholder (None)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        return [part for value in node.values for part in literal_parts(value)]
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return literal_parts(node.left) + literal_parts(node.right)
    return [None]


def template(node: ast.AST, where: str) -> Template:
    parts, text = [], ""
    for part in literal_parts(node):
        if part is None:
            parts.append(text)
            text = ""
        else:
            text += part
    return Template(where, node.lineno, (*parts, text))


def error_classes(trees: dict[str, ast.Module]) -> tuple[set[str], set[str]]:
    """UserError and its subclasses; and those of them that build their message in their own
    __init__ (a call to one passes values, not a message)."""
    names, own_init = {"UserError"}, set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(getattr(b, "id", None) in names for b in node.bases):
                names.add(node.name)
                if any(isinstance(f, ast.FunctionDef) and f.name == "__init__" for f in node.body):
                    own_init.add(node.name)
    return names, own_init


def printed_error(node: ast.Call) -> ast.AST | None:
    """The message of `print(... "error: ..." ...)`, a line printed without a UserError."""
    if getattr(node.func, "id", None) != "print" or not node.args:
        return None
    for part in ast.walk(node.args[0]):  # outermost first: `f"..." + ...` before its f-string
        if isinstance(part, (ast.Constant, ast.JoinedStr, ast.BinOp)) and \
                (literal_parts(part)[0] or "").startswith("error: "):
            return part
    return None


def sources() -> dict[str, ast.Module]:
    """Every module of the package (by its path below src/fundamentallm) and of scripts/."""
    files = {p.relative_to(PACKAGE).as_posix(): p for p in sorted(PACKAGE.rglob("*.py"))}
    files |= {f"scripts/{p.name}": p for p in sorted(SCRIPTS.glob("*.py"))}
    return {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in files.items()}


def templates() -> list[Template]:
    trees = sources()
    errors, own_init = error_classes(trees)
    found = []

    def add(node: ast.AST, where: str, prefix: str = "", anything_before: bool = False) -> None:
        made = template(node, where)
        parts = list(made.parts)
        parts[0] = parts[0].removeprefix(prefix)
        found.append(Template(where, made.line, ("", *parts) if anything_before else tuple(parts)))

    for module, tree in trees.items():
        for scope in ast.walk(tree):
            if not isinstance(scope, (ast.FunctionDef, ast.ClassDef)):
                continue
            where = f"{module}:{scope.name}"
            inside_error = isinstance(scope, ast.ClassDef) and scope.name in errors
            for node in ast.walk(scope):
                if isinstance(node, ast.Call) and node.args:
                    name = getattr(node.func, "id", None)
                    method = getattr(node.func, "attr", None)
                    if (name in errors and name not in own_init) or (inside_error and method == "__init__"):
                        add(node.args[0], where)
                    elif where in WARNING_LISTS and method == "append" and \
                            getattr(node.func.value, "id", None) in ("found", "warnings"):
                        add(node.args[0], where, anything_before=True)
                    elif module == "training/divergence.py" and method == "event" and len(node.args) > 2:
                        add(node.args[2], where)  # a run event: the text after `warning: `
                    elif (printed := printed_error(node)) is not None:
                        add(printed, where, prefix="error: ")
                elif isinstance(node, ast.Return) and where in MESSAGE_PARTS and node.value is not None:
                    add(node.value, where, anything_before=True)  # the end of a message
    # a call inside a nested function is seen from each enclosing scope: keep the innermost
    innermost = {}
    for t in found:
        innermost[(t.line, t.text)] = t
    return sorted(innermost.values(), key=lambda t: (t.where, t.line))


def rows() -> list[tuple[str, str, str, str]]:
    """(section, message, cause, fix) for each table row of the page."""
    section, found = "", []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line
        match = ROW.match(line)
        if match:
            found.append((section, *(g.strip() for g in match.groups()[1:])))
    return found


def test_the_extraction_finds_messages_of_every_kind():
    """The reader of the source sees plain strings, f-strings, subclasses, message parts,
    printed error lines, scripts and warnings."""
    found = {t.text for t in templates()}
    assert "{}: file is empty" in found  # an f-string
    assert "no training data given" in found  # a plain string
    assert any(t.startswith("{}: damaged checkpoint: its contents do not match") for t in found)  # a subclass
    assert "{}: cannot write ({})" in found  # WriteFailed's super().__init__
    assert any("refused, as loading it would call" in t for t in found)  # unreadable()
    assert "process {} of {} stopped with an input error" in found  # the launcher's printed line
    assert "no readable runs found below {}" in found  # a script
    assert "{}--profile-steps applies only with --profile; ignored" in found  # a warning (after anything)
    assert any(t.startswith("loss spike from step") for t in found)  # a run event
    assert len(found) > 200


def explained(known: list[Template], messages: list[str]) -> set[tuple[str, int]]:
    """The templates some row explains: of the templates a row matches, the most specific
    (the most literal text), so that a general one (`FILE: no NAME`) is not taken as
    explained by a row that is another message's (`FILE: no such file`)."""
    found = set()
    for message in messages:
        hits = [t for t in known if t.pattern.fullmatch(message)]
        if hits:
            most = max(t.literal for t in hits)
            found |= {(t.where, t.line) for t in hits if t.literal == most}
    return found


def test_every_message_the_code_can_print_has_a_row_with_its_cause_and_fix():
    page_rows = rows()
    known = [t for t in templates() if not t.wrapper]
    done = explained(known, [message for _, message, _, _ in page_rows])
    missing = [f"{t.where}:{t.line}: {t.text}" for t in known if (t.where, t.line) not in done]
    assert not missing, "no row on the troubleshooting page for:\n" + "\n".join(missing)
    for _, message, cause, fix in page_rows:
        assert len(cause) >= 8 and len(fix) >= 3, f"row {message!r} needs a cause and a fix"


def argparse_templates() -> list[Template]:
    """argparse's own messages (`invalid choice: %(value)r ...`) as templates."""
    tree = ast.parse(Path(argparse.__file__).read_text(encoding="utf-8"))
    return [Template("argparse", node.lineno, tuple(re.split(r"%\(\w+\)[sr]|%[sr]", node.value)))
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"%(\(\w+\))?[sr]", node.value)]


def test_every_row_is_a_message_the_code_prints():
    """A row whose message the code no longer prints (reworded or removed) fails here; the
    rows on usage errors are argparse's messages after the command's name."""
    ours = [t for t in templates() if not t.wrapper]
    usage = argparse_templates()
    stale = []
    for section, message, _, _ in rows():
        if section == USAGE_SECTION:
            command = re.match(r"fundamentallm( [a-z]+)*: ", message)
            if not (command and any(t.pattern.fullmatch(message[command.end():]) for t in usage)):
                stale.append(message)
        elif not any(t.pattern.fullmatch(message) for t in ours):
            stale.append(message)
    assert not stale, "rows that match no message of the code:\n" + "\n".join(stale)


def test_a_new_message_without_a_row_is_caught():
    """The matching can fail: a made-up message matches no row; a placeholder stands for a
    value, not for the words after it; and a general template is not explained by the row of
    a more specific one."""
    messages = [m for _, m, _, _ in rows()]
    made_up = Template("x.py:f", 1, ("", ": a message no one wrote a row for"))
    assert not explained([made_up], messages)
    no_such_file = Template("x.py:f", 1, ("", ": no such file"))
    assert no_such_file.pattern.fullmatch("FILE: no such file")
    assert not no_such_file.pattern.fullmatch("FILE: no such file, or another")
    general = Template("x.py:g", 2, ("", ": no ", ""))
    assert explained([no_such_file, general], ["FILE: no such file"]) == {("x.py:f", 1)}


def test_every_wrapper_is_known_and_each_known_wrapper_still_exists():
    """A message with no words of its own passes another one on; each is listed with its
    reason, so that a new one is looked at rather than silently left out of the catalog."""
    wrappers = {t.where for t in templates() if t.wrapper}
    assert wrappers == set(WRAPPERS), (wrappers - set(WRAPPERS), set(WRAPPERS) - wrappers)


def test_every_value_check_phrase_has_a_row():
    """`--FLAG must be greater than 0 (got X)` is one template with a phrase per check
    (config/schema.py CHECKS): each phrase is a row."""
    from fundamentallm.config.schema import CHECKS

    messages = [m for _, m, _, _ in rows()]
    missing = [phrase for _, phrase in CHECKS.values() if not any(f" {phrase} (got " in m for m in messages)]
    assert not missing, missing
