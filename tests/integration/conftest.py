"""Fixtures shared by the integration tests (helpers live in integration_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from integration_helpers import sample_text


@pytest.fixture(scope="session")
def tiny_text() -> str:
    """The first 20,000 characters of the bundled sample."""
    return sample_text(20_000)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_text: str) -> Path:
    """The tiny text as a file shared by a module's runs."""
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture
def text_file(tmp_path: Path, tiny_text: str) -> Path:
    path = tmp_path / "train.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """Tiny models train several times faster on one thread than on many (no fork/join per
    op), and CI has 2 cores. Restored after each module, so other test directories keep theirs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
