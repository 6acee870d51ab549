"""Files the program writes honour the umask: atomic writes start from a private temporary
file (mkstemp's 0600, mkdtemp's 0700), which must not stay with the file renamed into place."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")

WRITE_ALL = """
import os, sys
os.umask(int(sys.argv[1], 8))
from pathlib import Path
from fundamentallm.atomic import TemporaryTextFile, atomic_write, write_text
out = Path(sys.argv[2])
write_text(out / "text.txt", "hello")
atomic_write(out / "binary.bin", lambda f: f.write(b"x"))
pieces = TemporaryTextFile(out / "pieces.txt")
pieces.write("a piece")
pieces.commit(out / "pieces.txt")
"""


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask, expected", [("022", 0o644), ("027", 0o640), ("077", 0o600), ("002", 0o664)])
def test_atomic_writes_get_the_mode_open_would_give_them(tmp_path, umask, expected):
    subprocess.run([sys.executable, "-c", WRITE_ALL, umask, str(tmp_path)], check=True, timeout=60)
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "text.txt": expected, "binary.bin": expected, "pieces.txt": expected}


def test_a_training_run_and_an_export_are_readable_under_umask_022(tmp_path, tiny_text):
    pytest.importorskip("safetensors")
    data = tmp_path / "text.txt"
    data.write_text(tiny_text, encoding="utf-8")
    code = (
        "import os, sys; os.umask(0o022)\n"
        "from fundamentallm.cli import main\n"
        "d, out = sys.argv[1], sys.argv[2]\n"
        "flags = ['--model-dim', '16', '--num-layers', '1', '--num-heads', '2', '--context-length', '16',\n"
        "         '--batch-size', '4', '--max-steps', '2', '--eval-interval', '2', '--eval-iters', '1',\n"
        "         '--no-compile', '--device', 'cpu', '--precision', 'fp32', '--quiet', '--token-cache', out + '/tokens']\n"
        "assert main(['train', d, '-o', out + '/run', *flags]) == 0\n"
        "assert main(['export', out + '/run/final.pt', out + '/exported']) == 0\n")
    subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path)], check=True, timeout=300,
                   capture_output=True)
    run = tmp_path / "run"
    for name in ("final.pt", "resume_checkpoint.pt", "metrics.json", "summary.json", "config.yaml", "loss_curve.png"):
        assert mode(run / name) == 0o644, name
    exported = tmp_path / "exported"
    assert mode(exported) == 0o755 and mode(exported / "model.safetensors") == 0o644
    (entry,) = [p for p in (tmp_path / "tokens").rglob("meta.json")]
    assert mode(entry.parent) == 0o755 and mode(entry) == 0o644
    assert json.loads((run / "summary.json").read_text())["steps"] == 2
