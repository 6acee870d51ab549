"""`fundamentallm data augment --back-translate` on tiny MarianMT models built here (nothing can
be downloaded): scripts/make_translation_models.py trains their SentencePiece vocabularies on
20 KB of the sample and saves them with save_pretrained. And `train --augment-file`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sentencepiece")
pytest.importorskip("transformers")

from integration_helpers import (  # noqa: E402
    ROOT, assert_one_line_error, fundamentallm_command, process_env, run_cli, sample_text, tiny_args,
)
from helpers import run_script  # noqa: E402

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it trains and runs tiny translation models.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """(en→fr, fr→en): tiny Marian models copy-trained on the sample, built by the script."""
    where = tmp_path_factory.mktemp("translators")
    text = where / "text.txt"
    text.write_text(sample_text(20_000), encoding="utf-8")
    done = run_script("scripts/make_translation_models.py", where, "--text", text, timeout=300)
    assert done.returncode == 0, done.stderr
    to, back = where / "tiny-en-fr", where / "tiny-fr-en"
    for directory in (to, back):
        assert {"config.json", "model.safetensors", "source.spm", "target.spm", "vocab.json"} <= {
            p.name for p in directory.iterdir()}
    return to, back


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text(sample_text(20_000), encoding="utf-8")
    return path


def augment(source: Path, out: Path, models: tuple[Path, Path], *extra: str, cache: Path | None = None,
            capsys=None) -> dict:
    """Run the command in-process with --json; return its report."""
    cache = cache or out.parent / f"cache-{out.name}"
    rc = run_cli("data", "augment", source, out, "--back-translate", "--pivot", "fr", "--model-to", models[0],
                 "--model-back", models[1], "--cache", cache, "--device", "cpu", "--json", *extra)
    assert rc == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\n")  # strict UTF-8


def test_output_is_utf8_text_with_the_expected_units(models, source, tmp_path, capsys):
    out = tmp_path / "out.txt"
    report = augment(source, out, models, "--fraction", "0.3", capsys=capsys)
    original = source.read_text(encoding="utf-8")
    assert report["units"] == sum(1 for line in original.splitlines() if any(c.isalpha() for c in line))
    assert report["chosen"] == round(0.3 * report["units"])
    assert report["changed"] > report["chosen"] // 2
    assert report["changed"] + report["unchanged"] + report["unfinished"] == report["chosen"]
    text = out.read_bytes().decode("utf-8")
    assert text.startswith(original)  # --mix append: IN, then one paraphrase per line
    tail = text[len(original):]
    if not original.endswith("\n"):  # (this sample ends mid-line: its last line is ended first)
        assert tail.startswith("\n")
        tail = tail[1:]
    appended = tail.split("\n")
    assert appended[-1] == "" and len(appended) - 1 == report["changed"]
    assert all(line.strip() and line == line.strip() for line in appended[:-1])
    assert len(lines(out)) - 1 == len(original.splitlines()) + report["changed"]
    pairs = out.with_name("out.txt.pairs.jsonl").read_text(encoding="utf-8").splitlines()
    header, records = json.loads(pairs[0]), [json.loads(line) for line in pairs[1:]]
    assert header["by"] == "lines" and header["changed"] == report["changed"] == len(records)
    assert [r["paraphrase"] for r in records] == appended[:-1]
    assert all(r["source"] in original.splitlines() or r["source"] in original for r in records)


def test_fraction_zero_reproduces_the_input_exactly(models, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_bytes("First line.\r\n\n  Indented: é, ü, 漢字.\nno newline at the end".encode())
    report = augment(source, tmp_path / "out.txt", models, "--fraction", "0", capsys=capsys)
    assert (tmp_path / "out.txt").read_bytes() == source.read_bytes()
    assert report["chosen"] == report["changed"] == 0 and report["units"] == 3


def test_the_same_seed_gives_the_same_output(models, source, tmp_path, capsys):
    # Each run with its own empty cache: the equality is the computation's, not the cache's.
    outs = []
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        augment(source, tmp_path / f"{name}.txt", models, "--fraction", "0.2", "--seed", seed, capsys=capsys)
        outs.append((tmp_path / f"{name}.txt").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]  # another seed draws other units


def test_an_interrupted_run_resumes_from_its_cache(models, source, tmp_path, capsys):
    """A real process killed (SIGKILL) mid-run; the same command again continues from the cache
    and writes what a run that was never interrupted writes."""
    out, cache = tmp_path / "out.txt", tmp_path / "cache"
    argv = ["data", "augment", source, out, "--back-translate", "--pivot", "fr", "--model-to", models[0],
            "--model-back", models[1], "--cache", cache, "--device", "cpu", "--fraction", "0.6",
            "--batch-size", "2", "--json"]
    process = subprocess.Popen(fundamentallm_command(*argv), env=process_env(), cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        files = list(cache.glob("*.jsonl"))
        if files and files[0].read_text(encoding="utf-8").count("\n") >= 40:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    assert not out.exists()  # nothing half-written
    with open(next(cache.glob("*.jsonl")), "a", encoding="utf-8") as file:
        file.write('{"key": "cut off by the kill')  # a torn last line is ignored
    rc = run_cli(*argv)
    assert rc == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 40 <= resumed["from_cache"] < resumed["distinct"]
    fresh = augment(source, tmp_path / "fresh.txt", models, "--fraction", "0.6", "--batch-size", "2",
                    cache=tmp_path / "fresh-cache", capsys=capsys)
    assert fresh["from_cache"] == 0
    assert out.read_bytes() == (tmp_path / "fresh.txt").read_bytes()
    again = augment(source, tmp_path / "again.txt", models, "--fraction", "0.6", "--batch-size", "2",
                    cache=cache, capsys=capsys)
    assert again["from_cache"] == again["distinct"] and again["batches"] == 0


def test_mix_interleave_puts_each_paraphrase_after_its_line(models, source, tmp_path, capsys):
    out = tmp_path / "out.txt"
    report = augment(source, out, models, "--fraction", "0.2", "--mix", "interleave", capsys=capsys)
    got, original = lines(out), source.read_text(encoding="utf-8").split("\n")
    assert len(got) == len(original) + report["changed"]
    records = [json.loads(line) for line in out.with_name("out.txt.pairs.jsonl").read_text().splitlines()[1:]]
    at, inserted = 0, set()
    for record in records:  # in the order of IN, each source line directly followed by its paraphrase
        at = next(i for i in range(at, len(got) - 1)
                  if got[i].strip() == record["source"] and got[i + 1].strip() == record["paraphrase"]) + 2
        inserted.add(at - 1)
    assert [line for i, line in enumerate(got) if i not in inserted] == original


def test_mix_replace_keeps_the_line_count(models, source, tmp_path, capsys):
    out = tmp_path / "out.txt"
    report = augment(source, out, models, "--fraction", "0.2", "--mix", "replace", capsys=capsys)
    got, original = lines(out), source.read_text(encoding="utf-8").split("\n")
    assert len(got) == len(original)
    assert sum(a != b for a, b in zip(got, original)) == report["changed"] > 0


def test_by_sentences_translates_each_sentence(models, tmp_path, capsys):
    source = tmp_path / "prose.txt"
    source.write_text("The king is dead. Long live the king! Who comes there?\nA friend. Nothing more.\n",
                      encoding="utf-8")
    by_lines = augment(source, tmp_path / "l.txt", models, capsys=capsys)
    report = augment(source, tmp_path / "s.txt", models, "--by", "sentences", "--mix", "interleave",
                     capsys=capsys)
    assert (by_lines["units"], report["units"]) == (2, 5)
    assert len(lines(tmp_path / "s.txt")) == 3  # paraphrases stay inside their lines
    assert lines(tmp_path / "s.txt")[0].startswith("The king is dead. ")


def test_max_length_cuts_long_units_and_never_truncates(models, tmp_path, capsys):
    source = tmp_path / "long.txt"
    words = sample_text(3_000).split()
    source.write_text(" ".join(words[:60]) + "\n" + " ".join(words[60:70]) + "\n", encoding="utf-8")
    whole = augment(source, tmp_path / "a.txt", models, "--mix", "replace", capsys=capsys)
    cut = augment(source, tmp_path / "b.txt", models, "--mix", "replace", "--max-length", "8", capsys=capsys)
    # Two lines there, and their two translations back; a translation that fills the pivot model's
    # output limit is one token too long for the back model's input (its end token) and is cut in
    # two. Which ones do depends on the CPU's rounding in the untrained models (Sapphire Rapids: 5).
    assert 4 <= whole["pieces"] <= 6
    assert cut["pieces"] > 20 and cut["unfinished"] == 0
    long_paraphrase = lines(tmp_path / "b.txt")[0]
    assert len(long_paraphrase.split()) >= 10  # the translation of every piece, joined


def test_decoding_flags_change_the_paraphrases(models, source, tmp_path, capsys):
    runs = {}
    for name, extra in (("greedy", ()), ("beams", ("--num-beams", "3")), ("sample", ("--sample",)),
                        ("sample2", ("--sample",)), ("batch", ("--batch-size", "3"))):
        report = augment(source, tmp_path / f"{name}.txt", models, "--fraction", "0.2", *extra, capsys=capsys)
        runs[name] = ((tmp_path / f"{name}.txt").read_bytes(), report)
    assert runs["beams"][0] != runs["greedy"][0]
    assert runs["sample"][0] != runs["greedy"][0]
    assert runs["sample"][0] == runs["sample2"][0]  # seeded
    assert runs["batch"][1]["batches"] > runs["greedy"][1]["batches"]  # smaller batches, more of them


def test_the_cache_directory_and_overwrite(models, source, tmp_path, capsys):
    out, cache = tmp_path / "out.txt", tmp_path / "my-cache"
    report = augment(source, out, models, "--fraction", "0.1", cache=cache, capsys=capsys)
    assert Path(report["cache"]).parent == cache and Path(report["cache"]).is_file()
    rc = run_cli("data", "augment", source, out, "--back-translate", "--pivot", "fr", "--model-to", models[0],
                 "--model-back", models[1], "--cache", cache)
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    again = augment(source, out, models, "--fraction", "0.1", "--overwrite", cache=cache, capsys=capsys)
    assert again["from_cache"] == again["distinct"]


def test_summary_lines(models, source, tmp_path, capsys):
    rc = run_cli("data", "augment", source, tmp_path / "out.txt", "--back-translate", "--pivot", "fr",
                 "--model-to", models[0], "--model-back", models[1], "--cache", tmp_path / "c", "--fraction", "0.1")
    out = capsys.readouterr().out
    assert rc == 0
    assert "paraphrased 54 of 540 lines (10%)" in out and "lines/s" in out and "from the cache" in out
    assert f"wrote {tmp_path / 'out.txt'}" in out


@pytest.mark.parametrize("extra, fragment", [
    ((), "--back-translate"),
    (("--back-translate",), "--pivot"),
    (("--back-translate", "--pivot", "f r"), "--pivot 'f r'"),
    (("--back-translate", "--pivot", "en"), "is the source language"),
    (("--back-translate", "--pivot", "fr", "--max-length", "100000"), "reads at most 128 tokens"),
    (("--back-translate", "--pivot", "fr", "--fraction", "1.5"), "--fraction"),
    (("--back-translate", "--pivot", "fr", "--device", "cuda"), "--device cuda"),
])
def test_bad_settings_are_one_line_errors(models, source, tmp_path, capsys, extra, fragment):
    if "cuda" in extra:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    rc = run_cli("data", "augment", source, tmp_path / "out.txt", *extra, "--model-to", models[0],
                 "--model-back", models[1], "--cache", tmp_path / "c")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error:") and fragment in err[0], err


def test_output_never_overwrites_the_input(models, source, capsys):
    rc = run_cli("data", "augment", source, source, "--back-translate", "--pivot", "fr", "--overwrite",
                 "--model-to", models[0], "--model-back", models[1])
    assert rc == 2 and "is the input file" in capsys.readouterr().err


def command(source: Path, out: Path, *extra: str) -> list[str]:
    return fundamentallm_command("data", "augment", source, out, "--back-translate", "--pivot", "fr", *extra)


def test_a_missing_model_directory_is_one_line(models, source, tmp_path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run(command(source, tmp_path / "out.txt", "--model-to", str(missing), "--model-back",
                                    str(models[1])), env=process_env(), capture_output=True, text=True)
    assert_one_line_error(result, f"--model-to {missing}: no such directory")
    (tmp_path / "empty").mkdir()
    result = subprocess.run(command(source, tmp_path / "out.txt", "--model-to", str(models[0]), "--model-back",
                                    str(tmp_path / "empty")), env=process_env(), capture_output=True, text=True)
    assert_one_line_error(result, "no config.json there")


def test_default_models_offline_and_not_cached_say_how_to_get_them(source, tmp_path):
    env = process_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    result = subprocess.run(command(source, tmp_path / "out.txt", "--source-lang", "de", "--pivot", "es"),
                            env=env, capture_output=True, text=True)
    line = assert_one_line_error(result, "--model-to Helsinki-NLP/opus-mt-de-es: not in the local Hugging Face "
                                 "cache and this machine is offline")
    assert "hf download Helsinki-NLP/opus-mt-de-es" in line and "--model-to DIR" in line


@pytest.mark.parametrize("module", ["sentencepiece", "transformers"])
def test_a_missing_dependency_names_the_extra(models, source, tmp_path, module):
    hide = (f"import sys; sys.modules[{module!r}] = None; from fundamentallm.cli import main; "
            f"sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", hide, *command(source, tmp_path / "o.txt", "--model-to",
                             str(models[0]), "--model-back", str(models[1]))[3:]],
                            env=process_env(), capture_output=True, text=True)
    line = assert_one_line_error(result, "pip install fundamentallm[augment]")
    assert module in line


# ---------------------------------------------------------------- train --augment-file
def start_info(capsys) -> dict:
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return next(e for e in events if e["event"] == "start")


@pytest.mark.parametrize("token_cache", ["off", "dir"])
def test_train_with_augment_file_adds_paraphrases_to_training_only(models, source, tmp_path, capsys,
                                                                   token_cache):
    out = tmp_path / "aug.txt"
    augment(source, out, models, "--fraction", "0.5", capsys=capsys)
    cache = "off" if token_cache == "off" else str(tmp_path / "tokens")
    base = ["train", source, *tiny_args(max_steps=1), "--token-cache", cache, "--json"]
    assert run_cli(*base, "-o", tmp_path / "plain") == 0
    plain = start_info(capsys)
    assert run_cli(*base, "-o", tmp_path / "mixed", "--augment-file", out) == 0
    mixed = start_info(capsys)
    # validation: the original text only (the same tokens and sample; only the run directory it names differs)
    assert mixed["validation"] == plain["validation"].replace(str(tmp_path / "plain"), str(tmp_path / "mixed"))
    assert mixed["train tokens"] > plain["train tokens"]
    assert mixed["paraphrases"].endswith("of validation units left out)")
    records = [json.loads(line) for line in out.with_name("aug.txt.pairs.jsonl").read_text().splitlines()[1:]]
    used = int(mixed["paraphrases"].split()[0].replace(",", ""))
    left_out = int(mixed["paraphrases"].split("(")[1].split()[0].replace(",", ""))
    assert used + left_out == len(records) and left_out > 0
    saved = (tmp_path / "mixed" / "config.yaml").read_text()
    assert f"augment_file: {out}" in saved


def test_augment_file_without_its_pairs_is_one_line(source, tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("some text\n")
    rc = run_cli("train", source, *tiny_args(max_steps=1), "-o", tmp_path / "run", "--augment-file", plain)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no plain.txt.pairs.jsonl beside it" in err[0]

