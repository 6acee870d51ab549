"""Reading training text in pieces: the same text and the same errors as reading it whole."""

from __future__ import annotations

import pytest

from fundamentallm.data.text import read_text, read_text_file, stream_text, stream_text_file
from fundamentallm.textstream import stream_lines
from fundamentallm.errors import UserError

TEXT = "\ufeffé🙂 line one\r\nline two — ünï\n\nthird 日本\n"


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_pieces_join_to_the_whole_file_whatever_the_chunk_size(tmp_path, chunk):
    path = tmp_path / "t.txt"
    path.write_bytes(TEXT.encode("utf-8"))
    assert "".join(stream_text_file(path, chunk)) == read_text_file(path) == TEXT[1:]  # no BOM


@pytest.mark.parametrize("chunk", [1, 3, 4, 1000])
def test_invalid_utf8_is_reported_at_its_file_offset(tmp_path, chunk):
    path = tmp_path / "bad.txt"
    good = "héllo wörld ".encode()  # 14 bytes, two of them two-byte characters
    path.write_bytes(good + b"\xff rest")
    with pytest.raises(UserError, match=f"bad byte 0xff at offset {len(good)}\\)"):
        list(stream_text_file(path, chunk))


def test_truncated_character_at_the_end_is_invalid(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("abc".encode() + "é".encode()[:1])
    with pytest.raises(UserError, match="bad byte 0xc3 at offset 3"):
        list(stream_text_file(path, 2))


@pytest.mark.parametrize("content, message", [(b"", "file is empty"), (b" \n\n", "file is empty"),
                                              (b"ab\x00cd", "binary")])
def test_empty_and_binary_files_are_refused(tmp_path, content, message):
    path = tmp_path / "x.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        list(stream_text_file(path, 2))


def test_lines_reassemble_across_pieces():
    assert list(stream_lines(["ab\nc", "d", "\n\ne"])) == ["ab\n", "cd\n", "\n", "e"]


def test_stream_text_joins_documents_like_read_text(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.jsonl").write_text('{"text": "second"}\n{"text": "third"}\n')
    pieces = list(stream_text(tmp_path, "|", glob="*"))
    assert "".join(pieces) == "first|second|third" == read_text(tmp_path, "|", glob="*")
