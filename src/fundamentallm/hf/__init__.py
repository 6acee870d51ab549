"""The Hugging Face model-directory format: config.json, model.safetensors, tokenizer files.

A format of the core, like our own checkpoints: `read_model_directory` reads such a
directory (ours, or a small public Llama, Qwen3 or GPT-2 model) into the parts of a
checkpoint, so evaluate, generate, serve and `train --init-from` take a directory wherever
they take a .pt (checkpoint.load_checkpoint). architectures.py maps our model variants to
the standard architectures both ways; tokenizer_files.py writes and reads the tokenizer
files. Writing a directory is the `export` command's (interop/).

Nothing here runs code from a model directory: config.json is JSON, weights are safetensors.
"""

from fundamentallm.hf.directory import is_model_directory, read_model_directory

__all__ = ["is_model_directory", "read_model_directory"]
