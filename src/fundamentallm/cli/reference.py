"""The command-line reference as Markdown, from the typed options that also build `--help`.

The documentation site's "Command line" page is this module's output (docs/hooks.py writes
it at build time), so a flag's help, default and choices are declared once, in its
`option(...)`, and read the same in a terminal and on the site.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from fundamentallm.cli import CFG_PREFIX, COMMANDS
from fundamentallm.config import Config
from fundamentallm.config.loading import FieldInfo, class_fields
from fundamentallm.sampling import SamplingOptions


def _default(instance: Any, info: FieldInfo) -> str:
    value = getattr(instance, info.name)
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"`{value!r}`" if isinstance(value, str) and value.strip() != value else f"`{value}`"


def _names(info: FieldInfo) -> str:
    if info.meta["positional"]:
        return f"`{info.meta['metavar'] or info.name.upper()}`"
    names = [info.flag, *info.meta["aliases"]]
    if info.kind is bool:
        names = [info.flag, f"--no-{info.flag[2:]}", *info.meta["aliases"]]
    return ", ".join(f"`{n}`" for n in names)


def _what(info: FieldInfo) -> str:
    text = info.meta["help"].replace("|", "\\|")
    if info.meta["choices"]:
        text += " (" + ", ".join(f"`{c}`" for c in info.meta["choices"]) + ")"
    return text


def _rows(infos: Iterable[FieldInfo], defaults: Any) -> Iterator[str]:
    for info in infos:
        if info.flag is None:
            continue
        instance = defaults(info) if callable(defaults) else defaults
        yield f"| {_names(info)} | {_default(instance, info)} | {_what(info)} |"
        for flag, (_, help) in info.meta["fixed_flags"].items():
            yield f"| `{flag}` | | {help} |"


HEADER = ["| argument | default | what it does |", "|---|---|---|"]


def _command(path: str, command: Any) -> Iterator[str]:
    yield f"## `fundamentallm {path}`\n"
    yield f"{command.help[0].upper()}{command.help[1:]}.\n"
    yield from HEADER
    yield from _rows(class_fields(command.options), command.options())
    for infos, prefix in command.more:
        infos = list(infos())
        if prefix == CFG_PREFIX:  # the config tree: one table per section, as in a YAML file
            config = Config()
            yield ""
            for section in dict.fromkeys(info.section for info in infos):
                yield f"\n### {section}\n"
                yield from HEADER
                yield from _rows((i for i in infos if i.section == section), getattr(config, section))
        else:
            yield ""
            yield "\n### sampling\n"
            yield from HEADER
            yield from _rows(infos, SamplingOptions())
    yield ""


def _commands(table: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for name, command in table.items():
        if command.actions:
            yield from _commands(command.actions, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def cli_reference() -> str:
    """Every subcommand, each argument with its default and help, as one Markdown page."""
    lines = ["# Command line", "",
             "Every subcommand and argument of `fundamentallm`, generated from the typed options that also "
             "build `fundamentallm COMMAND --help`. A `train` flag sets the config key of the same name in "
             "its section (`--model-dim` is `model.model_dim` in a YAML file given with `--config`).", ""]
    for path, command in _commands(COMMANDS):
        lines += list(_command(path, command))
    return "\n".join(lines) + "\n"
