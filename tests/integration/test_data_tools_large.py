"""analyze_data.py and clean_data.py as a user runs them: a 200 MB corpus in bounded memory, and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, SAMPLE, process_env, run_script, script_command

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it puts hundreds of megabytes through the data tools.
pytestmark = pytest.mark.slow


# Runs a script in a fresh child and writes that child's peak RSS (ru_maxrss, KiB on
# Linux) to a file, so nothing else this test session ran is included in the figure.
PEAK_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)
# Measured on the development machine (2 shared cores, numpy 2.4, tokenizers 0.23) on
# the 200 MB file: analyze_data.py --json peaks at ~160 MB RSS in ~6 s (of which ~35 MB is
# the interpreter with numpy and rich, ~50 MB one hash per non-empty line, the rest one
# 4 MB chunk in flight and the BPE sample); clean_data.py --dedupe at ~85 MB in ~5 s.
# Neither imports torch. The bounds leave ~40% and ~75% headroom for other builds.
ANALYZE_PEAK_MB = 220
CLEAN_PEAK_MB = 150
NUMBERED_PER_COPY = 2000


def run_measured(script: str, *args: str | Path, rss_file: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    command = script_command(f"scripts/{script}", *args)
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_WRAPPER, str(rss_file), *command],
                            cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=300)
    return result, int(rss_file.read_text()) / 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    """~200 MB: the bundled sample (plus a final newline) again and again, each copy
    followed by lines numbered so that they occur once in the whole file."""
    sample = SAMPLE.read_text(encoding="utf-8") + "\n"
    sample_lines = sample.split("\n")[:-1]
    copies = -(-200_000_000 // (len(sample) + NUMBERED_PER_COPY * len("numbered line 000-0000\n")))
    path = tmp_path_factory.mktemp("large") / "corpus.txt"
    size = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        for copy in range(copies):
            block = sample + "".join(f"numbered line {copy:03d}-{j:04d}\n" for j in range(NUMBERED_PER_COPY))
            f.write(block)
            size += len(block)
    non_empty = [line for line in sample_lines if line.strip()]
    facts = {
        "copies": copies,
        "bytes": size,
        "lines": copies * (len(sample_lines) + NUMBERED_PER_COPY),
        "empty_lines": copies * (len(sample_lines) - len(non_empty)),
        "non_empty": copies * (len(non_empty) + NUMBERED_PER_COPY),
        "distinct": len(set(non_empty)) + copies * NUMBERED_PER_COPY,
        "words": copies * (len(sample.split()) + 3 * NUMBERED_PER_COPY),
        "sample_lines": sample_lines,
    }
    return path, facts


def test_analyze_200_mb_in_bounded_memory(corpus, tmp_path):
    path, facts = corpus
    assert facts["bytes"] >= 200_000_000
    result, peak_mb = run_measured("analyze_data.py", path, "--json", rss_file=tmp_path / "rss")
    assert result.returncode == 0, result.stderr
    assert peak_mb < ANALYZE_PEAK_MB, f"peak RSS {peak_mb:.0f} MB"
    data = json.loads(result.stdout)
    assert (data["bytes"], data["characters"], data["lines"]) == (facts["bytes"], facts["bytes"], facts["lines"])
    assert (data["empty_lines"], data["non_empty_lines"]) == (facts["empty_lines"], facts["non_empty"])
    assert data["duplicate_lines"] == facts["non_empty"] - facts["distinct"]
    assert data["words"] == facts["words"]
    assert data["line_endings"] == {"lf": facts["lines"], "crlf": 0, "cr": 0}
    assert (data["likely_encoding"], data["invalid_sequences"]) == ("ascii", 0)
    assert data["line_length"]["max"] == max(map(len, facts["sample_lines"]))
    assert data["bpe_sample_characters"] == 2_000_000
    assert 0.2 * data["characters"] < data["estimated_bpe_tokens"] < 0.5 * data["characters"]
    assert any("consider clean_data.py --dedupe" in line for line in data["recommendations"])


def test_clean_200_mb_with_dedupe_in_bounded_memory(corpus, tmp_path):
    path, facts = corpus
    out = tmp_path / "clean.txt"
    result, peak_mb = run_measured("clean_data.py", path, out, "--dedupe", rss_file=tmp_path / "rss")
    assert result.returncode == 0, result.stderr
    assert peak_mb < CLEAN_PEAK_MB, f"peak RSS {peak_mb:.0f} MB"
    duplicates = facts["non_empty"] - facts["distinct"]
    counts = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in result.stdout.splitlines()[1:]}
    assert counts["duplicate lines removed"] == f"{duplicates:,}"
    # Expected: the first copy without its own repeats; later copies keep only their
    # blank lines and numbered lines. Built here line by line with a set.
    seen: set[str] = set()
    expected = hashlib.sha256()
    for copy in range(facts["copies"]):
        lines = facts["sample_lines"] + [f"numbered line {copy:03d}-{j:04d}" for j in range(NUMBERED_PER_COPY)]
        kept = []
        for line in lines:
            if not line.strip() or line not in seen:
                kept.append(line)
                seen.add(line)
        expected.update(("\n".join(kept) + "\n").encode())
    actual = hashlib.sha256()
    with out.open("rb") as f:
        while block := f.read(1 << 22):
            actual.update(block)
    assert actual.hexdigest() == expected.hexdigest()


def test_analyze_script_json_plot_and_table(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"caf\xe9 line\r\nsame\nsame\n\xf0\x9f\x98\x80\n")
    plot = tmp_path / "charts" / "plot.png"
    plot.parent.mkdir()
    result = run_script("scripts/analyze_data.py", path, "--json", "--plot", plot, "--top", "3", "--bpe-vocab-size", "300")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["invalid_sequences"], data["invalid_offsets"][0]["offset"]) == (1, 3)
    assert (data["duplicate_lines"], data["bpe_vocab_size"], len(data["most_common"])) == (1, 300, 3)
    assert data["likely_encoding"] == "windows-1252 or latin-1"  # the emoji is 1 valid non-ASCII character
    assert plot.read_bytes().startswith(b"\x89PNG")
    table = run_script("scripts/analyze_data.py", path)
    assert table.returncode == 0, table.stderr
    for fragment in ("likely encoding", "invalid UTF-8 sequences", "duplicate non-empty lines", "p90",
                     "estimated tokens (byte-level BPE", "is an estimate", "clean_data.py --invalid"):  # fmt: skip
        assert fragment in table.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["{tmp}/missing.txt"], "no such file"), (["{tmp}/empty.txt"], "file is empty"),
     (["{tmp}/emptydir"], "no .txt or .md files"), (["{tmp}/ok.txt", "--top", "-1"], "--top"),
     (["{tmp}/ok.txt", "--bpe-vocab-size", "10"], "--bpe-vocab-size"),
     (["{tmp}/ok.txt", "--plot", "{tmp}/ok.txt/plot.png"], "cannot write")],
)  # fmt: skip
def test_analyze_script_errors_are_one_line(tmp_path, args, fragment):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "ok.txt").write_text("fine\n", encoding="utf-8")
    result = run_script("scripts/analyze_data.py", *(arg.format(tmp=tmp_path) for arg in args))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr


def test_clean_script_options_and_counts(tmp_path):
    source, out = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_bytes(b"abZ\r\nab\n\nab\nx\n\xe9t\xe9\n")
    result = run_script("scripts/clean_data.py", source, out, "--dedupe", "--min-length", "2", "--min-char-count", "2",
                        "--rare-char-replacement", "_", "--invalid", "replace")  # fmt: skip
    assert result.returncode == 0, result.stderr
    # Pass 1 drops the second "ab" (duplicate) and "x" (short), leaving a, b and U+FFFD
    # twice each but Z and t once: pass 2 replaces those two, and nothing is rare after it.
    assert out.read_text(encoding="utf-8") == "ab_\nab\n\n\ufffd_\ufffd\n"
    assert "duplicate lines removed:" in result.stdout
    lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in result.stdout.splitlines()[1:]}
    assert lines["invalid UTF-8 sequences replaced by U+FFFD"] == "2"
    assert lines["line endings normalised (\\r\\n, \\r -> \\n)"] == "1"
    assert lines["duplicate lines removed"] == "1"
    assert lines["lines removed for length"] == "1 shorter than 2"
    assert lines["characters seen < 2 times -> '_'"] == "2 (2 distinct characters)"
    assert lines["passes"] == "2"
    bad = run_script("scripts/clean_data.py", source, out, "--rare-char-replacement", "_")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --rare-char-replacement needs --min-char-count"
