"""MkDocs hooks: the pages made from the code at build time, so that they cannot drift from it.

- `reference/cli.md`: every subcommand and flag with its help, from the same typed options
  that build `--help` (fundamentallm.cli.reference).
- `code/<module>.md`: each module of the package, its source with numbered lines.
- Links written `[text](code:fundamentallm/model/transformer.py:written_out_attention)`, or
  bare `(code:...)` (shown as "`transformer.py` line N"), point at the line that defines that
  name (or else the first line holding that text) in the module's code page. A name that is not there stops the build: a doc cannot keep a
  link to code that moved or went away.
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "fundamentallm"
sys.path.insert(0, str(ROOT / "src"))

CODE_LINK = re.compile(r"(\])?\(code:([\w/.]+\.py)(?::([^)]+))?\)")


def on_files(files, config):
    from fundamentallm.cli.reference import cli_reference

    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE.parent).as_posix()
        text = module.read_text(encoding="utf-8")
        page = f"# `{relative}`\n\n```python linenums=\"1\"\n{text}\n```\n"
        files.append(File.generated(config, f"code/{relative}.md", content=page))
    return files


def line_of(path: str, target: str | None) -> int:
    lines = (PACKAGE.parent / path).read_text(encoding="utf-8").splitlines()
    if not target:
        return 1
    if target.isidentifier():
        definition = re.compile(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(target)}\b|^{re.escape(target)}\s*[:=]")
        for number, line in enumerate(lines, 1):
            if definition.search(line):
                return number
    for number, line in enumerate(lines, 1):
        if target in line:
            return number
    raise PluginError(f"a link to code:{path}:{target}: no such definition or text in {path}")


def on_page_markdown(markdown, page, config, files):
    def resolve(match: re.Match) -> str:
        """`[text](code:...)` keeps its text; a bare `(code:...)` becomes `module.py line N`."""
        text, path, target = match.group(1), match.group(2), match.group(3)
        if not (PACKAGE.parent / path).is_file():
            raise PluginError(f"{page.file.src_uri}: a link to code:{path}: no such module")
        here = posixpath.dirname(page.file.src_uri)
        line = line_of(path, target)
        url = f"{posixpath.relpath(f'code/{path}.md', here or '.')}#__codelineno-0-{line}"
        return f"]({url})" if text else f"[`{posixpath.basename(path)}` line {line}]({url})"

    return CODE_LINK.sub(resolve, markdown)
