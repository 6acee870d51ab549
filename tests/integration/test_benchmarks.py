"""The benchmark scripts run end to end and print the JSON their README promises.
(Their figures are measurements, not test assertions: only the shape and the invariants
that hold on any machine are checked here, on tiny settings.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT, TINY_SHAPE, run_script, sample_text
from integration_helpers import train

# Slow (`make test-fast` runs pytest -m 'not slow' and leaves it out):
# it runs the benchmarks' bounded forms.
pytestmark = pytest.mark.slow

TINY_FLAGS = [f"--{name.replace('_', '-')}={value}" for name, value in TINY_SHAPE.items()]


def bench(script: str, *args: str) -> dict:
    args = list(args)
    args.insert(args.index("--") if "--" in args else len(args), "--json")  # not a train flag
    done = run_script(f"benchmarks/{script}", *args, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_throughput_reports_fp32_and_bf16_with_mfu_and_the_loss_gap():
    report = bench("throughput.py", *TINY_FLAGS, "--batch-size", "4", "--steps", "10",
                   "--warmup", "10", "--no-compile")
    assert set(report["peak_gflops"]) == {"fp32", "bf16"}
    assert report["peak_gflops"]["fp32"] > 0
    for key in ("fp32", "bf16"):
        assert report[key]["tokens_per_s"] > 0
        expected_mfu = report[key]["tokens_per_s"] * report["flops_per_token"] / (
            report["peak_gflops"][key] * 1e9)
        # relative: on a CPU that emulates bf16 (~1 GFLOP/s) an absolute tolerance is most of the figure
        assert report[key]["mfu"] == pytest.approx(expected_mfu, rel=0.01, abs=1e-4)
    ratio = report["bf16"]["tokens_per_s"] / report["fp32"]["tokens_per_s"]
    assert report["bf16_over_fp32"] == pytest.approx(ratio, abs=0.01)
    gap = report["bf16"]["last_loss"] - report["fp32"]["last_loss"]
    assert report["last_loss_gap"] == pytest.approx(gap, abs=1e-4) and abs(gap) < 0.1
    assert report["auto"].startswith(("bf16", "fp32"))
    assert report["shape"]["batch_size"] == 4 and report["compile"] is False


def test_attention_times_each_kernel_in_each_dtype():
    report = bench("attention.py", "--shape", "2", "2", "16", "8", "--repeats", "1")
    rows = report["ms_forward_backward"]
    assert [row["dtype"] for row in rows] == ["fp32", "bf16"]
    assert all(row[k] > 0 for row in rows for k in ("sdpa", "written_out", "written_out_compiled"))


def test_denormals_times_a_step_kept_and_flushed_and_counts_them(tmp_path, corpus):
    out = train(corpus, tmp_path / "run", max_steps=2)
    report = bench("denormals.py", str(out / "final.pt"), "--data", str(corpus), "--batch-size", "2",
                   "--steps", "1", "--repeats", "1")
    assert set(report["models"]) == {"trained", "fresh"} and report["context"] == 16
    for row in report["models"].values():
        assert row["ms_per_step_kept"] > 0 and row["ms_per_step_flushed"] > 0
        assert row["flushed_over_kept"] == pytest.approx(
            row["ms_per_step_flushed"] / row["ms_per_step_kept"], rel=0.02)
        assert isinstance(row["subnormal_gradient_entries"], int)
    bad = run_script("benchmarks/denormals.py", str(out / "final.pt"), "--data", str(corpus), "--steps", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --steps must be at least 1 (got 0)"


def test_generate_compares_cached_and_uncached():
    report = bench("generate.py", *TINY_FLAGS, "--tokens", "40")
    assert report["tokens"] == 40
    assert report["cached"]["tokens_per_s"] > 0 and report["uncached"]["tokens_per_s"] > 0
    assert report["same_tokens_within_context"] is True


def test_generate_cached_only_with_several_samples():
    report = bench("generate.py", *TINY_FLAGS, "--tokens", "30", "--num-samples", "3", "--cached-only")
    assert report["num_samples"] == 3 and report["cached"]["tokens_per_s"] > 0
    assert "uncached" not in report and "speedup" not in report


def test_quality_trains_both_recipes_and_reports_the_median(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(sample_text(60_000),
                    encoding="utf-8")
    report = bench("quality.py", "--data", str(data), "--max-time", "2", "--seeds", "1", "2",
                   "--target-loss", "99", "--work-dir", str(tmp_path / "work"), "--", "--no-compile",
                   "--eval-interval", "5", *TINY_FLAGS)
    names = [r["name"] for r in report["recipes"]]
    assert names[0].startswith("fundamentallm defaults") and names[1] == "classic baby-GPT recipe"
    for recipe in report["recipes"]:
        assert [r["seed"] for r in recipe["runs"]] == [1, 2]
        losses = sorted(r["val_loss"] for r in recipe["runs"])
        assert recipe["median_val_loss"] == sum(losses) / 2  # the median of two
        # char tokenizer: bits per char = nats per char / ln 2
        for r in recipe["runs"]:
            assert r["bits_per_char"] == pytest.approx(r["val_loss"] / 0.6931471805599453, abs=2e-4)
        # each run used its 2 s (it stops a little early to fit its closing validation, whose
        # length it estimates: the estimate may be generous by a fraction of a second)
        assert all(r["wall_time_s"] >= 1.6 for r in recipe["runs"])
    # Every loss is under 99: the target is met at the first evaluation of each run.
    first_eval = [r for r in json.loads((tmp_path / "work" / "recipe0-seed1" / "metrics.json").read_text())
                  if "val_loss" in r][0]
    assert report["recipes"][0]["runs"][0]["time_to_target_s"] == first_eval["elapsed_s"]
    assert report["target_loss"] == 99
    assert (tmp_path / "work" / "val.txt").stat().st_size > 0


def test_quality_reports_no_time_for_an_unreached_target(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(sample_text(30_000),
                    encoding="utf-8")
    report = bench("quality.py", "--data", str(data), "--max-time", "1", "--seeds", "1", "--no-classic",
                   "--target-loss", "0.01", "--", "--no-compile", "--eval-interval", "2", *TINY_FLAGS)
    assert [len(r["runs"]) for r in report["recipes"]] == [1]
    assert report["recipes"][0]["runs"][0]["time_to_target_s"] is None


def test_memory_measures_activation_checkpointing():
    report = bench("memory.py", "--model-dim", "32", "--num-layers", "4", "--num-heads", "2", "--context-length",
                   "16", "--batch-size", "4", "--repeats", "1", "--device", "cpu")
    off, on = report["without"], report["with_activation_checkpointing"]
    assert on["saved_activation_mb"] < off["saved_activation_mb"]
    assert report["activation_memory_ratio"] == pytest.approx(on["saved_activation_mb"] / off["saved_activation_mb"],
                                                              abs=0.01)


def test_budget_runs_every_mode_and_checks_the_default(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(sample_text(30_000), encoding="utf-8")
    report = bench("budget.py", "--data", str(data), "--budgets", "3", "--slack", "5", "--",
                   *TINY_FLAGS, "--batch-size=4", "--precision=fp32", "--eval-iters=2")
    (budget,) = report["budgets"]
    assert set(budget["runs"]) == {"eager", "compile_cold", "compile_warm", "default_cold", "default_warm"}
    assert budget["runs"]["eager"]["compile"] == "off" and budget["runs"]["eager"]["steps"] >= 1
    assert budget["runs"]["default_cold"]["compile"].startswith("eager: a first compile")  # 3 s is too short
    assert set(budget["vs_best"]) == {"cold", "warm"}
    assert isinstance(report["default_never_overruns"], bool)


def test_evaluate_compares_scoring_with_training():
    report = bench("evaluate.py", "--sizes", "0.02", "--precisions", "fp32", "bf16", "--train-steps", "30", "--",
                   *TINY_FLAGS, "--batch-size=4", "--no-compile", "--precision=fp32")
    assert report["training_tokens_per_s"] > 0
    assert [r["chosen"] for r in report["runs"]] == ["fp32", "bf16"]
    fp32, bf16 = report["runs"]
    assert fp32["tokens"] == bf16["tokens"] == 19_999 and fp32["tokens_per_s"] > 0
    assert bf16["loss"] == pytest.approx(fp32["loss"], abs=0.02)


def test_documents_compares_boundaries_and_masking(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(sample_text(40_000), encoding="utf-8")
    report = bench("documents.py", "--data", str(data), "--max-time", "3", "--",
                   *TINY_FLAGS, "--batch-size=4", "--precision=fp32", "--eval-iters=2", "--no-compile")
    assert set(report["runs"]) == {"none", "eos", "mask"} and report["records"]["train"] > 50
    assert report["runs"]["none"]["stop_accuracy"] is not None  # the tokenizer has the token, untrained
    assert all(r["steps"] >= 1 and r["tokens_per_s"] > 0 for r in report["runs"].values())
    assert report["mask_throughput_vs_eos"] > 0


def test_chat_scores_base_masked_and_unmasked(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(sample_text(40_000), encoding="utf-8")
    report = bench("chat.py", "--data", str(data), "--base-seconds", "3", "--finetune-seconds", "3", "--questions",
                   "100", "--test-questions", "10", "--max-tokens", "6", "--",
                   *TINY_FLAGS, "--batch-size=4", "--precision=fp32", "--eval-iters=2", "--no-compile")
    assert set(report["results"]) == {"base", "masked", "unmasked"}
    for result in report["results"].values():
        assert 0 <= result["accuracy"] <= 1 and set(result["by_task"]) <= {"first", "last", "count", "backwards",
                                                                            "capitals"}
    assert report["results"]["masked"]["steps"] >= 1


def test_gguf_runs_each_export_in_llama_cpp(tmp_path):
    """Only where llama-cpp-python is already built (benchmarks/gguf.py builds it in ~15
    minutes, too long for the suite; CI has no prebuilt llama.cpp to install)."""
    spec = importlib.util.spec_from_file_location("gguf_benchmark", ROOT / "benchmarks" / "gguf.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    built = Path.home() / ".cache" / "fundamentallm" / f"llama-cpp-python-{script.LLAMA_CPP_VERSION}-{script.cpu_key()}"
    if not (built / "llama_cpp").is_dir():
        pytest.skip(f"llama-cpp-python is not built in {built}")
    data = tmp_path / "text.txt"
    data.write_text(sample_text(40_000), encoding="utf-8")
    report = bench("gguf.py", "--data", str(data), "--train-seconds", "3", "--tokenizers", "char",
                   "--outtypes", "f32", "--tokens", "8", "--windows", "2")
    (checked,) = report["models"][0]["files"]
    assert checked["greedy_equal"] and checked["tokenizer_equal"]
    assert checked["perplexity"]["relative_difference"] < 1e-3 and checked["bytes"] > 0


def test_lora_compares_adapters_with_a_full_fine_tune(tmp_path):
    data = tmp_path / "text.txt"
    data.write_text(sample_text(40_000), encoding="utf-8")
    report = bench("lora.py", "--data", str(data), "--base-seconds", "2", "--steps", "3", "--ranks", "2", "--",
                   *TINY_FLAGS, "--batch-size=4", "--precision=fp32", "--eval-iters=2", "--no-compile")
    full, lora = report["runs"]["full"], report["runs"]["lora-2"]
    assert full["trained_share"] == 1.0 and 0 < lora["trained_share"] < 0.5
    assert lora["checkpoint_mb"] < full["checkpoint_mb"] and lora["training_state_mb"] <= full["training_state_mb"]
    assert all(r["val_loss"] > 0 for r in report["runs"].values())


def test_scale_measures_each_tokenizer_first_and_cached(tmp_path):
    report = bench("scale.py", "--sizes", "0.5", "--sources", "repeated", "real", "--tokenizers", "char", "bpe",
                   "--vocab-size", "300", "--plot", str(tmp_path / "scale.png"))
    assert report["baseline_start_s"] > 0 and (tmp_path / "scale.png").stat().st_size > 0
    assert {(r["source"], r["tokenizer"]) for r in report["rows"]} == {
        ("repeated", "char"), ("repeated", "bpe"), ("real", "char"), ("real", "bpe")}
    for row in report["rows"]:
        assert row["cache_mb"] > 0 and row["peak_rss_mb"] > 0 and row["first_step_s"] >= row["cached_start_s"] * 0.5
        assert list(row["stage_s"]) == ["counting characters", f"training the {row['tokenizer']} tokenizer",
                                        "tokenizing"]


CPUINFO = Path("/proc/cpuinfo")


@pytest.mark.skipif(not (CPUINFO.exists() and " avx2" in CPUINFO.read_text()), reason="needs an x86 CPU with AVX2")
def test_avx2_runs_a_command_with_avx2_kernels_only(tmp_path):
    probe = ("import torch; from torch._inductor import cpu_vec_isa; "
             "print(torch.backends.cpu.get_cpu_capability(), cpu_vec_isa.pick_vec_isa())")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "avx2.sh"), sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                            "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["AVX2", "avx2"]  # PyTorch's kernels and torch.compile's code
