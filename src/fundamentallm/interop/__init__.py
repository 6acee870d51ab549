"""Models that leave: a checkpoint written as a `transformers` model directory.

`export_checkpoint` writes config.json, model.safetensors, generation_config.json and the
tokenizer files, in the standard architecture that computes the model (hf/architectures.py),
or with our own modelling code (remote/). Reading such a directory is the core's
(fundamentallm.hf), since training and inference take one wherever they take a checkpoint.
"""

from fundamentallm.interop.export import ExportReport, export_checkpoint

__all__ = ["ExportReport", "export_checkpoint"]
