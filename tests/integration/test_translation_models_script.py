"""scripts/make_translation_models.py (each option's effect, its one-line errors) and the
bounded form of benchmarks/backtranslation.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

from helpers import assert_one_line_error, run_script, sample_text  # noqa: E402

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it trains tiny translation models.
pytestmark = pytest.mark.slow


@pytest.fixture
def text(tmp_path: Path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(sample_text(8_000), encoding="utf-8")
    return path


def build(out: Path, text: Path, *extra: str) -> tuple[dict, bytes]:
    done = run_script("scripts/make_translation_models.py", out, "--text", text, "--steps", "2", *extra, timeout=300)
    assert done.returncode == 0, done.stderr
    directory = next(p for p in out.iterdir() if p.name.startswith("tiny-"))
    return json.loads((directory / "config.json").read_text()), (directory / "model.safetensors").read_bytes()


def test_each_option_shapes_the_models(text, tmp_path):
    config, weights = build(tmp_path / "a", text)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["tiny-en-fr", "tiny-fr-en"]
    assert config["d_model"] == 32 and config["vocab_size"] == 202  # 200 pieces (<unk> among them) + </s>, <pad>
    wide, _ = build(tmp_path / "b", text, "--model-dim", "16", "--vocab-size", "100")
    assert wide["d_model"] == 16 and wide["vocab_size"] == 102
    _, same = build(tmp_path / "c", text)
    _, other = build(tmp_path / "d", text, "--seed", "5")
    assert same == weights and other != weights  # seeded
    build(tmp_path / "e", text, "--source-lang", "de", "--pivot", "es")
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["tiny-de-es", "tiny-es-de"]


@pytest.mark.parametrize("extra, fragment", [(("--model-dim", "7"), "--model-dim even"),
                                             (("--vocab-size", "100000"), "--vocab-size 100000")])
def test_bad_options_are_one_line_errors(text, tmp_path, extra, fragment):
    done = run_script("scripts/make_translation_models.py", tmp_path / "m", "--text", text, "--steps", "1", *extra,
                      timeout=300)
    assert_one_line_error(done, fragment)


def test_a_missing_text_file_is_one_line(tmp_path):
    done = run_script("scripts/make_translation_models.py", tmp_path / "m", "--text", tmp_path / "none.txt")
    assert_one_line_error(done, "no such file")


def test_the_benchmark_reports_each_batch_size_and_the_cached_rerun():
    done = run_script("benchmarks/backtranslation.py", "--chars", "6000", "--batch-sizes", "1,4", "--json",
                      timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    runs = result["runs"]
    assert [r["batch_size"] for r in runs] == [1, 4] and runs[1]["batches"] < runs[0]["batches"]
    assert runs[0]["output_digest"] == runs[1]["output_digest"]  # the same text at both sizes
    assert result["rerun_from_cache"]["batches"] == 0
