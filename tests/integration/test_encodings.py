"""Text in the encodings people's files come in: UTF-16 with its byte-order mark is read as
text, a binary file is called one, and the commands a not-UTF-8 error suggests work as printed."""

from __future__ import annotations

import json
import re
import subprocess

from helpers import run_script
from integration_helpers import ROOT, assert_one_line_error, losses, process_env, run_process, sample_text, train

TEXT = sample_text(12_000)


def test_utf16_with_its_byte_order_mark_trains_as_the_same_text(tmp_path):
    utf8, utf16 = tmp_path / "utf8.txt", tmp_path / "utf16.txt"
    utf8.write_text(TEXT, encoding="utf-8")
    utf16.write_bytes(TEXT.encode("utf-16"))  # a BOM, then little-endian pairs: full of NUL bytes
    assert utf16.read_bytes()[:2] == b"\xff\xfe" and b"\x00" in utf16.read_bytes()[:100]
    assert losses(train(utf16, tmp_path / "from16")) == losses(train(utf8, tmp_path / "from8"))


def test_clean_data_converts_utf16_to_utf8(tmp_path):
    source = tmp_path / "windows.txt"
    source.write_bytes("caf\u00e9 au lait\r\nna\u00efve\r\n".encode("utf-16-be").join([b"\xfe\xff", b""]))
    result = run_script("scripts/clean_data.py", source, tmp_path / "clean.txt")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "clean.txt").read_text(encoding="utf-8") == "caf\u00e9 au lait\nna\u00efve\n"


def test_a_program_is_called_a_binary_file(tmp_path):
    program = tmp_path / "program"
    program.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)  # an ELF header, then any bytes
    result = run_process("train", program, "-o", tmp_path / "run")
    assert "looks like a binary file (contains NUL bytes)" in assert_one_line_error(result)


def test_the_commands_a_latin1_error_suggests_work_as_printed(tmp_path):
    latin1 = tmp_path / "notes.txt"
    latin1.write_bytes(TEXT.replace("e", "\u00e9").encode("latin-1"))
    error = assert_one_line_error(run_process("train", latin1, "-o", tmp_path / "never", cwd=tmp_path))
    commands = re.findall(r"`([^`]+)`", error)
    assert [c.split()[0] for c in commands] == ["iconv", "python"], error
    for command in commands:  # as printed, in the directory the user ran train in
        done = subprocess.run(["bash", "-c", command.replace("scripts/", f"{ROOT}/scripts/", 1)], cwd=tmp_path,
                              env=process_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)
    for converted in ("converted.txt", "cleaned.txt"):
        assert (tmp_path / converted).read_text(encoding="utf-8").count("\u00e9") == TEXT.count("e")
        train(tmp_path / converted, tmp_path / f"run-{converted}")


def test_a_directory_says_which_files_it_did_not_read(tmp_path, capsys):
    notes = tmp_path / "notes"
    (notes / "code").mkdir(parents=True)
    (notes / ".git").mkdir()
    (notes / "a.txt").write_text(TEXT[:6000], encoding="utf-8")
    (notes / "b.md").write_text(TEXT[6000:], encoding="utf-8")
    (notes / "code" / "tool.py").write_text("print('hi')\n", encoding="utf-8")
    (notes / "code" / "more.py").write_text("x = 1\n", encoding="utf-8")
    (notes / "data.bin").write_bytes(bytes(range(256)))
    (notes / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")  # hidden: not counted
    capsys.readouterr()
    train(notes, tmp_path / "run", "--json", quiet=False)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["event"] == "start"
    assert start["skipped"] == ("3 file(s) not read (.py: 2, .bin: 1): a directory's .txt and .md files are read; "
                                "--glob '*.py' takes others")
    train(notes, tmp_path / "only-md", "--json", "--glob", "*.md", quiet=False)
    start = json.loads(capsys.readouterr().out.splitlines()[0])
    assert start["skipped"] == "4 file(s) not read (.py: 2, .bin: 1, .txt: 1): only files matching --glob '*.md' are read"
