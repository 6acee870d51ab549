"""Models that leave and enter: the Hugging Face `transformers` format, both ways.

- `export_checkpoint` writes a checkpoint as a `transformers` model directory (config.json,
  model.safetensors, generation_config.json and the tokenizer files), in the standard
  architecture that computes it (architectures.py), or with our own modelling code.
- `read_model_directory` reads such a directory (ours, or a small public Llama, Qwen3 or
  GPT-2 model) into a checkpoint dict, so evaluate, generate, serve and `train
  --init-from` take a directory wherever they take a .pt; `fundamentallm import` saves it.

Nothing here runs code from a model directory: config.json is JSON, weights are safetensors.
"""

from fundamentallm.interop.export import ExportReport, export_checkpoint
from fundamentallm.interop.importing import is_model_directory, read_model_directory

__all__ = ["ExportReport", "export_checkpoint", "is_model_directory", "read_model_directory"]
