"""Docs that run: every shell command and Python block of docs/ (and the flags they name)
checked against the real program.

Each page (the README first) runs top to bottom in a scratch directory holding a 20 KB slice
of the sample (as `data/shakespeare_sample.txt`) and links to scripts/ and configs/: its
```bash blocks with bash -e, its ```python blocks with this Python, so that a later block
can use what an earlier one wrote. A page makes every file its commands name. `fundamentallm` is a wrapper on PATH that makes every training run tiny
(a small shape given first, which the page's own flags override, and `--max-steps 3`
last); everything else runs as written. A few commands cannot run here and are counted as
skipped, each for a reason in SKIPPED. `mkdocs build --strict` builds the site.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, process_env, sample_text

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it runs every page's commands (~120 CLI processes) and builds the site.
pytestmark = pytest.mark.slow

DOCS = ROOT / "docs"
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))]
FENCE = re.compile(r"^```(bash|python)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)

# Commands a page may show that the test does not run, and why.
SKIPPED = {
    r"^\s*pip install": "installs packages (make setup does, in CI)",
    r"^\s*make (setup|test|docs|demo|bench)": "a make target (CI runs make setup and make test)",
    r"^\s*source \.venv/bin/activate": "the test runs inside the virtual environment already",
    r"^\s*hf download|huggingface-cli": "needs the network",
    r"^\s*mkdocs serve|^\s*tensorboard --logdir": "a server for a person to look at",
    r"^\s*python benchmarks/|^\s*benchmarks/\S+\.sh": "a benchmark (their bounded forms run in test_benchmarks.py)",
    r"^\s*(cd \S+ && )?(llama-cli|ollama) ": "llama.cpp and Ollama are not installed here "
                                            "(benchmarks/gguf.py runs the file in llama.cpp)",
    r"^\s*torchrun": "starts python -m fundamentallm itself, past the tiny-run wrapper (--nproc, the same launch, runs)",
}
SERVER = re.compile(r"^.*fundamentallm serve [^&\n]*&.*$", re.M)  # a server a block leaves running

TINY_TRAIN = ["--model-dim", "32", "--num-layers", "2", "--num-heads", "2", "--context-length", "32",
              "--batch-size", "4", "--eval-iters", "1", "--eval-interval", "2", "--device", "cpu",
              "--precision", "fp32", "--no-compile"]

WRAPPER = """#!/usr/bin/env bash
# The doc test's fundamentallm: training runs made tiny, everything else as written.
command="$1"; shift
case "$command" in
  train) set -- train {tiny} "$@" --max-steps 3 ;;
  sweep) if [[ " $* " == *" --report "* ]]; then set -- sweep "$@"; else set -- sweep "$@" --device cpu --no-compile --max-steps 2 --trials 2; fi ;;
  *) set -- "$command" "$@" ;;
esac
exec "{python}" -m fundamentallm "$@"
"""


def blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def runnable(code: str) -> tuple[str, list[str]]:
    """The block's shell text with the skipped commands replaced by `:`; and their reasons."""
    joined = re.sub(r"\\\n\s*", " ", code)  # continuation lines into one
    lines, skipped = [], []
    for line in joined.splitlines():
        reason = next((why for pattern, why in SKIPPED.items() if re.search(pattern, line)), None)
        if reason:
            skipped.append(f"{line.strip()} ({reason})")
            line = ":"
        lines.append(line)
    return "\n".join(lines) + "\n", skipped


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "shakespeare_sample.txt").write_text(sample_text(20_000), encoding="utf-8")
    for name in ("scripts", "configs", "benchmarks", "tasks"):
        (tmp_path / name).symlink_to(ROOT / name)
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "fundamentallm"
    wrapper.write_text(WRAPPER.format(tiny=" ".join(TINY_TRAIN), python=sys.executable))
    wrapper.chmod(0o755)
    for name in ("python", "python3"):  # a script, not a link: a venv is found from the path it was run by
        (bin_dir / name).write_text(f'#!/usr/bin/env bash\nexec "{sys.executable}" "$@"\n')
        (bin_dir / name).chmod(0o755)
    return tmp_path


def wait_for_servers(code: str, env: dict[str, str]) -> None:
    """After a block that left a server running in the background: until it answers /health."""
    import urllib.request

    for match in SERVER.finditer(re.sub(r"\\\n\s*", " ", code)):
        port = re.search(r"--port (\d+)", match.group())
        url = f"http://127.0.0.1:{port.group(1) if port else 8000}/health"
        for _ in range(300):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)


def environment(scratch: Path) -> dict[str, str]:
    return process_env(PATH=f"{scratch / '.bin'}{os.pathsep}{os.environ['PATH']}", HOME=str(scratch),
                       FUNDAMENTALLM_CACHE=str(scratch / ".cache"), HF_HOME=str(scratch / ".hf"),
                       HF_HUB_OFFLINE="1", MPLBACKEND="Agg", WANDB_MODE="offline")


@pytest.mark.parametrize("page", PAGES)
def test_every_command_and_python_block_of_the_page_runs(page, scratch):
    found = blocks(ROOT / page)
    env = environment(scratch)
    groups = []
    try:
        for number, (kind, code) in enumerate(found, 1):
            if kind == "bash":
                script, _ = runnable(code)
                command = ["bash", "-e", "-o", "pipefail", "-c", script]
            else:
                (scratch / f".block{number}.py").write_text(code, encoding="utf-8")
                command = [sys.executable, f".block{number}.py"]
            log = scratch / f".block{number}.log"  # a file, not a pipe: a server left running keeps a pipe open
            with log.open("w") as output:
                process = subprocess.Popen(command, cwd=scratch, env=env, stdout=output, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
                groups.append(process.pid)
                process.wait(timeout=600)
            out = log.read_text(encoding="utf-8", errors="replace")
            assert process.returncode == 0, f"{page}, block {number} ({kind}) failed:\n{code}\n--- output:\n{out[-3000:]}"
            if kind == "bash":
                wait_for_servers(code, env)
    finally:
        for group in groups:  # a server a page started in the background, and anything else left
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def test_the_doc_blocks_are_counted():
    """What the test above runs, and what it leaves out and why (printed with -s)."""
    commands = python_blocks = 0
    left_out: list[str] = []
    for page in PAGES:
        for kind, code in blocks(ROOT / page):
            if kind == "python":
                python_blocks += 1
                continue
            script, skipped = runnable(code)
            left_out += skipped
            commands += sum(1 for line in script.splitlines() if line.strip() and line.strip() != ":"
                            and not line.lstrip().startswith("#"))
    print(f"doc test: {len(PAGES)} pages, {commands} shell lines, {python_blocks} Python blocks; "
          f"not run: {left_out}")
    assert commands > 50 and python_blocks >= 5
    assert all("(" in reason for reason in left_out)


def test_every_flag_of_every_subcommand_is_in_the_docs():
    """The reference page is generated from the typed options, so this holds by construction;
    the test reads the flags from the real argparse parsers, independently of it."""
    import argparse

    from fundamentallm.cli import build_parser
    from fundamentallm.cli.reference import cli_reference

    text = cli_reference() + "".join((ROOT / p).read_text(encoding="utf-8") for p in PAGES)
    pending, missing = [("fundamentallm", build_parser())], []
    while pending:
        name, parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                missing += [f"{name} {flag}" for flag in action.option_strings if f"`{flag}`" not in text]
    assert not missing, missing


# Flags the docs name that belong to other programs, by program.
FOREIGN_FLAGS = {
    "torchrun": {"--nnodes", "--node-rank", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id"},
    "tensorboard": {"--logdir"},
    "pip": {"--index-url"},
    "mkdocs build": {"--strict"},
    "llama.cpp's llama-cli": {"--no-repack"},
    "sbatch": {"--signal"},
    "the troubleshooting page's misspelt flag": {"--lerning-rate"},
}


def test_every_flag_the_docs_name_exists():
    """The other way round: a flag in the prose or a table (not only in a command the doc
    test runs) that no parser of ours has, and no other program's, is a stale doc."""
    import argparse

    from fundamentallm.cli import build_parser

    ours, pending = set(), [build_parser()]
    while pending:
        parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending += list(action.choices.values())
            ours |= set(action.option_strings)
    for script in [*(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        ours |= set(re.findall(r"[\"'](--[a-z0-9-]+)[\"']", script.read_text(encoding="utf-8")))
    foreign = set().union(*FOREIGN_FLAGS.values())
    unknown = sorted({(page, flag) for page in PAGES
                      for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w*-])",
                                             (ROOT / page).read_text(encoding="utf-8"))
                      if flag not in ours and flag not in foreign})
    assert "--learning-rate" in ours and "--form" in ours  # the CLI's and a script's are read
    assert not unknown, unknown


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=process_env(NO_MKDOCS_2_WARNING="1"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    training = (tmp_path / "site" / "guides" / "training" / "index.html").read_text(encoding="utf-8")
    assert "The complete workflow" in training
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "--augment-file" in cli and "fundamentallm data augment" in cli
    concepts = (tmp_path / "site" / "concepts" / "attention" / "index.html").read_text(encoding="utf-8")
    assert "code/fundamentallm/model/transformer.py/#__codelineno-0-" in concepts  # a resolved code link


def test_a_code_link_to_a_missing_name_stops_the_build(tmp_path):
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(DOCS))
    try:
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    from mkdocs.exceptions import PluginError

    assert hooks.line_of("fundamentallm/model/transformer.py", "written_out_attention") > 1
    with pytest.raises(PluginError, match="no such definition"):
        hooks.line_of("fundamentallm/model/transformer.py", "no_such_function_anywhere")


def test_the_figures_script_draws_from_a_real_run(tmp_path):
    pytest.importorskip("matplotlib")
    done = subprocess.run([sys.executable, "docs/make_figures.py", str(tmp_path), "--steps", "20"], cwd=ROOT,
                          env=process_env(MPLBACKEND="Agg"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    made = {p.name for p in tmp_path.glob("*.png")}
    assert {"lr_schedules.png", "loss_curve.png", "gradient_flow.png", "attention.png", "temperature.png",
            "rope.png"} <= made
    assert all((tmp_path / name).stat().st_size > 5_000 for name in made)
