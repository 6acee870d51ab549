"""The options of every subcommand, typed and declared once, like the config tree.

Each class is one command's (or one action's) options; the CLI builds its arguments from
these fields and reads the parsed values back into them, with the same checks and error
messages as the config. Settings several commands share are declared once: the device
(`device_option`, schema.py), the checkpoint a command reads, and the text field of JSONL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fundamentallm.config.schema import TOKENIZER_TYPES, device_option, option
from fundamentallm.corpus.split import UNITS
from fundamentallm.data.paraphrases import MIXES
from fundamentallm.data.paraphrases import UNITS as BACK_TRANSLATION_UNITS

# interop/gguf_export.py's OUTTYPES, written out: importing it would load torch for every command
GGUF_OUTTYPES = ("f32", "f16", "q8_0")


def checkpoint_argument() -> Any:
    return option("", "a .pt file written by train (e.g. OUTPUT_DIR/final.pt), or a Hugging Face "
                  "model directory", positional=True)


def text_field_option(default: str | None = "text") -> Any:
    return option(default, "JSONL: the field of each record that holds its text"
                  + ("" if default else " (default: the training run's)"))


@dataclass
class TrainOptions:
    """`train`'s own options; every setting of the run itself comes from the config tree."""

    data: list[str] = option([], "training text files or directories of .txt files", positional=True)
    config: str | None = option(None, "YAML run config (flags override it), e.g. configs/small.yaml")
    resume: str | None = option(
        None, "continue from OUTPUT_DIR/resume_checkpoint.pt, or from PATH; auto: continue if that "
        "file exists, else start afresh (for jobs that may be restarted)",
        aliases=("--resume-from",), metavar="PATH|auto", const=True)
    dry_run: bool = option(False, "print the resolved config and exit")
    nproc: int = option(1, "train in N processes on this machine (DDP; torchrun's agent, started for you: "
                        "`torchrun --standalone --nproc-per-node N` without typing it)", check="positive",
                        metavar="N", at_most=1024)
    overwrite: bool = option(False, "start afresh in an output directory that holds an earlier run")
    new_data: bool = option(False, "--resume: continue on training data that changed since the checkpoint (a "
                            "resume on other data is refused without it; the start summary says what changed)")
    quiet: bool = option(False, "print only warnings and errors", aliases=("-q",), exclusive="output")
    json: bool = option(False, "print JSON lines (start, metrics, end)", exclusive="output")


@dataclass
class EvaluateOptions:
    checkpoint: str = checkpoint_argument()
    data_file: str | None = option(None, "text to score: a file, a directory or a JSONL file (or --data)",
                                   positional=True, metavar="DATA")
    data: str | None = option(None, "text to score; every token is scored once")
    split: str | None = option(None, "score the run's own validation text whole, read as its training read it (its "
                               "--validation-data, or the last --val-split of its training text; training scores a "
                               "sample of it, --eval-iters batches)", choices=("validation",))
    text_field: str | None = text_field_option(None)
    batch_size: int = option(32, "windows per forward pass", check="positive", at_most=1 << 20)
    device: str = device_option()
    precision: str = option(
        "auto", "arithmetic of the forward passes: auto (bf16 autocast where this device computes it faster, "
        "as training chooses; the fourth decimal may differ from fp32's), fp32 or bf16",
        choices=("auto", "fp32", "bf16"))
    json: bool = option(False, "print one JSON object")
    tasks: list[str] = option([], "benchmark tasks through lm-evaluation-harness instead of a text: an lm-eval task "
                              "name or a local task .yaml file (repeatable; the eval extra)", metavar="TASK")
    limit: int | None = option(None, "--tasks: at most this many examples of each task", check="positive")


@dataclass
class GenerateOptions:
    checkpoint: str = checkpoint_argument()
    prompt: str | None = option(None, "text to continue (default: a newline)", exclusive="prompt")
    prompt_file: str | None = option(None, "continue the text of this file", exclusive="prompt")
    output: str | None = option(None, "write the output to this file instead of stdout",
                                aliases=("--output-file",))
    json: bool = option(False, "print JSON: each sample's text, token count, mean log-probability "
                        "and tokens/s")
    interactive: bool = option(False, "a prompt loop that keeps the settings")
    device: str = device_option()


@dataclass
class InteractiveOptions:
    checkpoint: str = checkpoint_argument()
    chat: bool = option(False, "a conversation: each line is your message, the model replies in its chat template "
                        "and stops at the end of its turn (a model fine-tuned with --format chat)")
    system: str | None = option(None, "--chat: a system message that opens the conversation")
    device: str = device_option()


@dataclass
class ServeOptions:
    checkpoint: str = checkpoint_argument()
    host: str = option("127.0.0.1", "address to listen on (default: this machine only)")
    port: int = option(8000, "port (0: any free port, printed at start)", check="port")
    device: str = device_option()
    max_tokens_limit: int = option(1000, "the largest max_tokens a request may ask for", check="positive",
                                   at_most=1_000_000)
    max_concurrent: int = option(16, "generation requests admitted at once: one runs, the others queue for "
                                 "the model; beyond this many, 503 with Retry-After", check="positive", at_most=100_000)
    body_timeout: float = option(30.0, "seconds a client may take to send its request body (408 after)",
                                 check="positive", at_most=1e6)
    api_key: str | None = option(None, "require 'Authorization: Bearer KEY' on every request (default: "
                                 "$FUNDAMENTALLM_API_KEY; needed to listen beyond loopback)", check="non_empty")
    model_name: str | None = option(None, "the model id OpenAI clients ask for (default: RUN/final for "
                                    "RUN/final.pt)", check="non_empty")
    quiet: bool = option(False, "no request log (by default one line per request on stderr: method, path, "
                         "status, tokens, seconds)", aliases=("-q",))


@dataclass
class ExportOptions:
    checkpoint: str = checkpoint_argument()
    output: str = option("", "the model directory to write, or a .gguf file (llama.cpp, Ollama)", positional=True,
                         metavar="OUT_DIR|OUT.gguf")
    dtype: str | None = option(None, "a model directory's weights: float32 (default), or bfloat16 (half the size)",
                               choices=("fp32", "bf16"))
    outtype: str | None = option(None, "a GGUF file's weights: f16 (default), f32, or q8_0 (8-bit, about half "
                                 "of f16)", choices=GGUF_OUTTYPES)
    overwrite: bool = option(False, "replace OUT_DIR (OUT.gguf and the files beside it) if it exists")
    merge_lora: bool = option(False, "a LoRA fine-tune (--lora-rank): write its base with the adapters merged in")


@dataclass
class ImportOptions:
    directory: str = option("", "a Hugging Face model directory (config.json, model.safetensors, "
                            "tokenizer.json)", positional=True, metavar="HF_DIR")
    output: str = option("", "the checkpoint to write (.pt)", positional=True, metavar="OUT.pt")


@dataclass
class TokenizerTrainOptions:
    data: list[str] = option([], "text files, directories or JSONL files", positional=True, required=True)
    type: str = option("bpe", "tokenizer type", choices=TOKENIZER_TYPES)
    vocab_size: int | None = option(None, "BPE vocabulary size (default 2048)", check="positive", at_most=1 << 20)
    text_field: str = text_field_option()
    output: str = option("", "where to write the tokenizer (.json)", aliases=("-o",), required=True)


def tokenizer_source() -> Any:
    return option("", "a tokenizer .json (tokenizer train) or a checkpoint .pt", positional=True)


@dataclass
class TokenizerEncodeOptions:
    source: str = tokenizer_source()
    text: str | None = option(None, "the text (or --file)", positional=True)
    file: str | None = option(None, "encode this file's text")
    show_tokens: bool = option(False, "print each token's text too")


@dataclass
class TokenizerDecodeOptions:
    source: str = tokenizer_source()
    ids: list[int] = option([], "token ids", positional=True, required=True)


@dataclass
class TokenizerInfoOptions:
    source: str = tokenizer_source()
    data: str | None = option(None, "a text file to measure characters and bytes per token on")


@dataclass
class DataSplitOptions:
    path: str = option("", "a text file (or, --by documents, a directory or JSONL file)", positional=True)
    val: float = option(0.1, "validation share")  # the shares are checked together, by the split
    test: float = option(0.0, "test share (0: no test.txt)")
    by: str = option("lines", "unit that is moved whole", choices=UNITS)
    shuffle: bool = option(False, "draw each unit's part at random (seeded)")
    seed: int = option(0, "seed for --shuffle", check="seed")
    text_field: str = text_field_option()
    output_dir: str | None = option(None, "where to write (default: beside the input)", aliases=("-o",))
    overwrite: bool = option(False, "replace existing train/val/test files")


@dataclass
class DataAugmentOptions:
    input: str = option("", "the text file to paraphrase (left untouched)", positional=True, metavar="IN")
    output: str = option("", "the augmented text to write (and OUT.pairs.jsonl beside it)", positional=True,
                         metavar="OUT")
    back_translate: bool = option(False, "paraphrase by translating to --pivot and back (MarianMT models; "
                                  "the only augmentation written to a file: --augment P of train acts while "
                                  "training)")
    pivot: str | None = option(None, "the language to translate through, e.g. fr or de")
    source_lang: str = option("en", "the language of IN")
    model_to: str | None = option(None, "the model from IN's language to the pivot: a directory or a Hugging "
                                  "Face id (default Helsinki-NLP/opus-mt-SRC-PIVOT)", metavar="NAME_OR_DIR")
    model_back: str | None = option(None, "the model from the pivot back (default "
                                    "Helsinki-NLP/opus-mt-PIVOT-SRC)", metavar="NAME_OR_DIR")
    fraction: float = option(1.0, "the share of units to paraphrase, drawn with --seed", check="share")
    by: str = option("lines", "the unit translated whole: each line, or each sentence of a line",
                     choices=BACK_TRANSLATION_UNITS)
    mix: str = option("append", "where the paraphrases go: after all of IN, each after its unit, or in its "
                      "place", choices=MIXES)
    batch_size: int = option(16, "texts per batch of the translation models", check="positive")
    num_beams: int | None = option(None, "beam search width (default: the model's own setting)",
                                   check="positive")
    sample: bool = option(False, "sample each token from the 10 most likely (Edunov et al. 2018) instead of "
                          "taking the most likely output: more varied paraphrases, still seeded")
    max_length: int | None = option(None, "the most tokens one model input may hold (default: the model's "
                                    "limit); longer units are cut at sentences, clauses or words, never "
                                    "truncated", check="positive")
    cache: str | None = option(None, "the translation cache directory (default ~/.cache/fundamentallm/"
                               "backtranslation); a run started again continues from it")
    device: str = device_option()
    seed: int = option(0, "seed of the units drawn (and of --sample)", check="seed")
    overwrite: bool = option(False, "replace OUT if it exists")
    json: bool = option(False, "print one JSON object: the counts and the throughput")


@dataclass
class SweepOptions:
    """`sweep`'s own options; the train flags given to it are held fixed for every trial."""

    data: list[str] = option([], "training text files or directories (as for train)", positional=True)
    space: str | None = option(None, "the search space: a YAML file of train options to vary")
    output_dir: str | None = option(None, "the sweep's directory: its study, trial_NNNN/ runs, best.yaml, "
                                    "plots", aliases=("-o",))
    config: str | None = option(None, "YAML run config for the settings held fixed (flags override it)")
    sampler: str = option("tpe", "how trials are chosen: tpe (Bayesian), random, or grid (every "
                          "combination of the choices)", choices=("tpe", "random", "grid"))
    pruner: str = option("median", "stop hopeless trials early, judged at each evaluation",
                         choices=("median", "hyperband", "none"))
    objective: str = option("val_loss", "what to minimise: the best validation loss, or bits per "
                            "character (compares across tokenizers)", choices=("val_loss", "val_bits_per_char"))
    trials: int | None = option(None, "trials to finish in all (default: the grid's size, or 20)",
                                check="positive")
    timeout: float | None = option(None, "start no new trial after this many seconds", check="positive", at_most=1e9)
    storage: str | None = option(None, "an Optuna storage URL shared by several processes or machines "
                                 "(default: sqlite:///OUTPUT_DIR/study.db)")
    study_name: str = option("sweep", "the study's name in its storage", check="non_empty")
    workers: int = option(1, "trials run at once on this machine, each in its own process", check="positive",
                          at_most=1024)
    sampler_seed: int = option(0, "seed of the sampler (trials keep their own --seed)", check="seed")
    report: str | None = option(None, "only report on the sweep in DIR (finished or not)", metavar="DIR")
    json: bool = option(False, "with --report: print JSON")
    quiet: bool = option(False, "print only warnings and errors", aliases=("-q",))
