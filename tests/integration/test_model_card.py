"""The model card written with every export: what the model is, the run's figures from its
summary.json, and a train command that makes the same run again (checked by running it)."""

from __future__ import annotations

import shlex

import yaml

from integration_helpers import run_cli, sample_text, train


def test_card_describes_the_run_and_its_command_trains_the_same_config(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text(sample_text(6000), encoding="utf-8")
    run = train(data, tmp_path / "run", "--dropout", "0.1", "--tie-embeddings", "--seed", "7")
    assert run_cli("export", run / "final.pt", tmp_path / "hf") == 0
    card = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\n")
    for fragment in ("| architecture | qwen3 (rmsnorm, rope positions, swiglu, QK-norm) |", "| steps | 5 |",
                     "| perplexity |", "## Training data", "## Reproduce"):
        assert fragment in card, fragment
    command = card.split("```bash\n")[1].split("\n```")[0]
    words = shlex.split(command)
    assert words[:3] == ["fundamentallm", "train", str(data)]
    assert "--tie-embeddings" in words and words[words.index("--dropout") + 1] == "0.1"
    again = tmp_path / "again"
    words[words.index("--output-dir") + 1] = str(again)
    assert run_cli(*words[1:], "--quiet") == 0
    first, second = (yaml.safe_load((d / "config.yaml").read_text()) for d in (run, again))
    first["checkpoint"].pop("output_dir"), second["checkpoint"].pop("output_dir")
    assert first == second


def test_card_of_a_checkpoint_without_its_run_says_so(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text(sample_text(6000), encoding="utf-8")
    run = train(data, tmp_path / "run")
    moved = tmp_path / "alone.pt"
    (run / "final.pt").rename(moved)
    assert run_cli("export", moved, tmp_path / "m.gguf") == 0
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "No training summary was found" in card and "| steps |" not in card
    assert "library_name: gguf" in card and "# alone" in card
