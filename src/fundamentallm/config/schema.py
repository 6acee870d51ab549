"""The config tree: one dataclass per concern, each field knowing its CLI flag.

Every field is declared with `option(...)`, which records the flag that sets it, its
aliases, help text and the check its value must pass. The CLI builds its flags from
these declarations, and YAML files use the same field names, so a new setting is one
new line here and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")
TOKENIZER_TYPES = ("char", "byte", "bpe")
# The block matrices LoRA adapts (model/lora.py), by layer: attention's fused query/key/value
# and output projections, the MLP's input (`up`, or SwiGLU's fused `gate_up`) and output.
LORA_TARGETS = ("qkv", "proj", "up", "down")

# Value checks, by name: (predicate, phrase used in the error message).
CHECKS = {
    "positive": (lambda v: v > 0, "must be greater than 0"),
    "non_negative": (lambda v: v >= 0, "must be 0 or more"),
    "fraction": (lambda v: 0 <= v < 1, "must be at least 0 and below 1"),
    "seed": (lambda v: 0 <= v < 2**63, "must be between 0 and 2**63 - 1"),
    "probability": (lambda v: 0 < v <= 1, "must be above 0 and at most 1"),
    "share": (lambda v: 0 <= v <= 1, "must be between 0 and 1"),
    "non_empty": (lambda v: bool(v.strip()), "must not be empty"),
    "port": (lambda v: 0 <= v < 65536, "must be between 0 and 65535"),
    # a logit offset: beyond this, every logit it touches is gone already (and fp32 overflows sooner)
    "penalty": (lambda v: -1e4 <= v <= 1e4, "must be between -10,000 and 10,000"),
    # a divisor of the logits: beyond these, fp32 logits overflow to infinity or flatten to nothing
    "divisor": (lambda v: 1e-4 <= v <= 1e4, "must be between 0.0001 and 10,000"),
    "temperature": (lambda v: v == 0 or 1e-4 <= v <= 1e4, "must be 0 (greedy) or between 0.0001 and 10,000"),
}
# The largest whole number any setting takes unless its own `at_most` says otherwise: two
# billion steps, tokens or seconds is beyond any run, and stays clear of int32 and int64 overflow
# in what is computed from it. (Seeds and ports have ranges of their own.)
INT_LIMIT = 2**31 - 1


class AddedSeconds(float):
    """`--max-time +S`: S seconds more than a resumed run has trained (made absolute when the
    saved state is read, training/start.py)."""


def seconds(text: str) -> float:
    """A --max-time value: SECONDS, or +SECONDS to add to a resumed run."""
    value = float(text)
    return AddedSeconds(value) if text.strip().startswith("+") else value


@dataclass(frozen=True)
class StartPolicy:
    """What a run started from a checkpoint does with one setting, for a resumed run
    (`--resume`) and for a fine-tuned one (`--init-from`):

        take   the checkpoint's value is the default; a file or a flag may change it
        keep   the checkpoint's value, and asking for another is an error naming the flag
        fresh  the setting's own default, as in a new run
    """

    resumed: str = "take"  # a resumed run continues the whole saved config
    fine_tuned: str = "fresh"  # a fine-tuned run is a new run on old weights
    part: str = ""  # what the setting belongs to, for the error message


# The weights only fit a model of the same shape, and only mean something with the same tokenizer.
SHAPE = StartPolicy("keep", "keep", "model shape")
TOKENIZER = StartPolicy("keep", "keep", "tokenizer")
# The saved optimizer state belongs to one optimizer and one layout of parameter groups.
OPTIMIZER_LAYOUT = StartPolicy("keep", "fresh", "optimizer")
# A regulariser's rate may change, but a fine-tuned model starts from the one it was trained with.
RATE = StartPolicy("take", "take")


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = "",
    aliases: tuple[str, ...] = (),
    choices: tuple[str, ...] | None = None,
    check: str | None = None,
    start: StartPolicy = StartPolicy(),
    positional: bool = False,
    required: bool = False,
    metavar: str | None = None,
    exclusive: str | None = None,
    const: Any = None,
    fixed_flags: dict[str, tuple[Any, str]] | None = None,
    parse: Any = None,
    at_most: float | None = None,
) -> Any:
    """A config or command field, and how the command line sets it.

    `flag=""` derives `--field-name`; `flag=None` means no flag. `positional` makes it a
    positional argument (a list takes any number, at least one when `required`; an optional
    one may be left out). `required` makes a flag required. Fields with the same `exclusive`
    name cannot be given together. `const`: the value of the flag given bare (`--resume`).
    `fixed_flags`: more flags, each setting one value, {flag: (value, help)} (a former
    spelling, such as `--mixed-precision` for `--precision auto`). `parse`: how the command
    line reads the value, where that is more than the field's type (`--max-time +60`).
    `at_most`: the largest sane value (a whole number's default: INT_LIMIT; any number must
    be finite); the memory a shape needs is checked as a whole (training/memory.py).
    """
    meta = {"help": help, "flag": flag, "aliases": aliases, "choices": choices, "check": check,
            "start": start, "positional": positional, "required": required, "metavar": metavar,
            "exclusive": exclusive, "const": const, "fixed_flags": fixed_flags or {},
            "parse": parse, "at_most": at_most}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def device_option(what: str = "where to run") -> Any:
    """The --device setting, declared once for every command that has one."""
    return option("auto", f"{what} (auto: cuda, then mps, then cpu)", choices=DEVICES)


@dataclass
class ModelConfig:
    """Shape of the decoder-only transformer (see model/transformer.py)."""

    vocab_size: int = option(0, "set from the tokenizer", flag=None, start=SHAPE)
    model_dim: int = option(128, "width of the residual stream", check="positive", start=SHAPE, at_most=65_536)
    num_layers: int = option(4, "number of transformer blocks", check="positive", start=SHAPE, at_most=1024)
    num_heads: int = option(4, "attention heads per block (must divide --model-dim)", check="positive", start=SHAPE,
                            at_most=1024)
    num_kv_heads: int | None = option(
        None, "key/value heads, shared by groups of query heads (grouped-query attention, Ainslie "
        "et al. 2023; must divide --num-heads; default: one per head)", check="positive", start=SHAPE, at_most=1024)
    context_length: int = option(
        128, "tokens the model sees at once", aliases=("--max-seq-len",), check="positive",
        start=SHAPE, at_most=1 << 20)
    dropout: float = option(0.0, "dropout probability", check="fraction", start=RATE)
    dropconnect: float = option(
        0.0, "DropConnect: probability of dropping each weight of the blocks' matrices during "
        "training (Wan et al. 2013)", check="fraction", start=RATE
    )
    norm: str = option("rmsnorm", "normalisation layer", choices=("rmsnorm", "layernorm"), start=SHAPE)
    position: str = option(
        "rope", "position information: rotary (in attention) or a learned table (at the input)",
        choices=("rope", "learned"), start=SHAPE,
    )
    activation: str = option(
        "swiglu", "MLP nonlinearity: a SwiGLU gate, ReLU squared, or GELU", choices=("swiglu", "relu2", "gelu"),
        start=SHAPE,
    )
    norm_gain: bool = option(True, "learn a per-channel gain in every norm (--no-norm-gain: "
                             "normalise only)", start=SHAPE)
    qk_norm: bool = option(True, "normalise queries and keys per head before attention", start=SHAPE)
    zero_init: bool = option(
        True, "start the projections that write into the residual stream at zero", start=SHAPE
    )
    tie_embeddings: bool = option(
        False, "--tie-embeddings: the output projection is the input embedding matrix (default: two "
        "matrices, which trained better at every size measured, char and BPE)", start=SHAPE
    )
    rope_theta: float = option(10000.0, "RoPE base: the longest rotation period, in positions",
                               check="positive", start=SHAPE, at_most=1e12)
    mlp_hidden: int | None = option(
        None, "MLP hidden width (default 4 x --model-dim; SwiGLU 8/3 x, the same parameter count)",
        check="positive", start=SHAPE, at_most=1 << 20)
    norm_eps: float | None = option(
        None, "epsilon added inside every norm (default: RMSNorm the dtype's eps, LayerNorm 1e-5)",
        check="positive", start=SHAPE, at_most=1.0)


@dataclass
class DataConfig:
    """Where the text comes from and how it is split and tokenised."""

    train: list[str] = option([], "training text files, directories or JSONL files", flag=None)
    validation_data: str | None = option(None, "held-out text file for validation")
    val_split: float = option(
        0.1, "fraction taken from the end of the training text for validation, "
        "when --validation-data is not given (0 disables validation)", check="fraction"
    )
    tokenizer: str = option(
        "char", "char: one token per character; byte: one per UTF-8 byte; bpe: byte-level BPE "
        "trained on the training text", choices=TOKENIZER_TYPES, start=TOKENIZER,
    )
    # Not `vocab_size`: that is the model's (ModelConfig.vocab_size, whatever the tokenizer).
    bpe_vocab_size: int | None = option(None, "BPE vocabulary size (default 2048)", flag="--vocab-size",
                                        check="positive", start=TOKENIZER, at_most=1 << 20)
    glob: str | None = option(
        None, "files to read from a data directory, e.g. '*.txt' (default: .txt and .md files)"
    )
    text_field: str = option("text", "JSONL data: the field of each record that holds its text")
    augment: float = option(
        0.0, "text augmentation: delete, and separately double, each token of a training window "
        "with this probability (validation text is never augmented; 0: off)", check="fraction"
    )
    augment_file: str | None = option(
        None, "paraphrases to train on as well: OUT of `fundamentallm data augment --back-translate` (read "
        "from OUT.pairs.jsonl); those of units that are in the validation text are left out", metavar="OUT")
    token_cache: str = option(
        "auto", "token cache for large corpora: auto (corpora from 32 MB, in ~/.cache/fundamentallm), "
        "off (always tokenise in memory), or a directory (always cache there)"
    )
    separator: str = option(
        "\n\n", "text put between documents (files, JSONL records); \\n and \\t are understood"
    )
    format: str = option(
        "text", "text: documents to continue; chat: JSONL conversations, {\"messages\": [{\"role\": ..., "
        "\"content\": ...}]} per line, rendered with the chat template (docs: From a base model to a chat model)",
        choices=("text", "chat"))
    train_on: str = option(
        "assistant", "--format chat: the tokens trained on: assistant (its replies, each closed by the end-of-turn "
        "token; the rest is context) or all", choices=("assistant", "all"))
    doc_boundary: str = option(
        "auto", "what ends a document: eos (the end-of-text token, so generation learns to stop), none (the "
        "--separator text), or auto: eos where the input is several documents (JSONL or table records, several "
        "files, --doc-separator), none for one text file", choices=("auto", "eos", "none"))
    doc_separator: str | None = option(
        None, "the text that separates documents inside a file, e.g. '<|endoftext|>' or '\\n\\n\\n' (removed, "
        "and each document then ends as --doc-boundary says)")
    doc_mask: bool = option(
        False, "document-masked packing: a token attends only within its own document, and positions restart "
        "at each (documents end with the end-of-text token)")
    special_tokens: list[str] = option(
        [], "add a special token of your own (repeatable): one id, which its text stands for in the training "
        "data and in prompts", metavar="TEXT", start=StartPolicy("keep", "take", "tokenizer"))


@dataclass
class OptimConfig:
    """The optimizer and its learning-rate schedule."""

    optimizer: str = option(
        "muon", "muon: Muon for hidden matrices and AdamW for the rest; adamw: AdamW for all",
        choices=("muon", "adamw"), start=OPTIMIZER_LAYOUT,
    )
    learning_rate: float = option(
        6e-3, "peak learning rate of the whole run (with muon, the hidden matrices train at "
        "MUON_LR_RATIO = 4.17 times it: see training/optim.py)", aliases=("--lr",), check="positive",
        at_most=1e4)
    muon_lr: float | None = option(
        None, "expert override: Muon's own peak rate for the hidden matrices, instead of "
        "--learning-rate x MUON_LR_RATIO", check="positive", at_most=1e4)
    embedding_lr: float | None = option(
        None, "peak rate of an untied input embedding (default: --learning-rate x EMBEDDING_LR_RATIO = 10 "
        "from scratch, see training/optim.py; --learning-rate with --init-from, whose embedding is trained)",
        check="positive", at_most=1e4, start=OPTIMIZER_LAYOUT)
    muon_momentum: float = option(0.9, "Muon momentum", check="fraction")
    min_lr: float | None = option(
        0.0, "learning rate at the end of the decay (Muon's rate decays by the same ratio; a config's "
        "null: a tenth of the peak, the default before 2026-12)",
        check="non_negative",
    )
    weight_decay: float = option(0.0, "weight decay of the hidden matrices (decoupled, as AdamW's)",
                                 check="non_negative")
    beta1: float = option(0.9, "AdamW beta1", check="fraction")
    beta2: float = option(0.99, "AdamW beta2", check="fraction")
    gradient_clip: float = option(
        1.0, "clip the gradient norm to this value (0 disables)", check="non_negative"
    )
    lr_schedule: str = option(
        "cosine", "learning-rate schedule after warmup (wsd: warmup-stable-decay, constant then "
        "a linear cool-down over the last --cooldown-fraction)", choices=("cosine", "linear", "wsd", "constant"),
    )
    cooldown_fraction: float = option(
        0.4, "wsd: share of training spent in the final linear cool-down", check="fraction"
    )
    warmup_steps: int = option(20, "steps of linear warmup", check="non_negative")
    layer_lr_decay: float = option(
        1.0, "layer-wise learning-rate decay: each block down from the top trains at this "
        "multiple of the one above, the embeddings lowest (e.g. 0.8 for fine-tuning; 1: off)",
        check="probability", start=OPTIMIZER_LAYOUT,
    )
    lookahead_steps: int = option(
        0, "Lookahead: every N steps, move a slow copy of the weights --lookahead-alpha of the "
        "way to the optimizer's and continue from there (Zhang et al. 2019; 0: off, 5 is usual)",
        check="non_negative",
    )
    lookahead_alpha: float = option(0.5, "Lookahead: how far the slow weights move", check="probability")
    freeze_embeddings: bool = option(
        False, "keep the embeddings fixed (with tied weights, the output head too)", start=OPTIMIZER_LAYOUT
    )
    freeze_layers: int = option(0, "keep the first N transformer blocks fixed", check="non_negative",
                                start=OPTIMIZER_LAYOUT)


@dataclass
class LoraConfig:
    """Low-rank adapters (model/lora.py): fine-tune a trained model through them, its weights frozen."""

    rank: int = option(0, "LoRA: train only low-rank adapters of this rank on the --init-from model, its own "
                       "weights frozen (0: off; 8 is usual)", flag="--lora-rank", check="non_negative",
                       start=StartPolicy("keep", "fresh", "LoRA adapters"), at_most=65_536)
    alpha: float | None = option(None, "LoRA: the adapters' update is scaled by alpha / rank (default: 2 x rank)",
                                 flag="--lora-alpha", check="positive",
                                 start=StartPolicy("keep", "fresh", "LoRA adapters"))
    targets: list[str] = option(list(LORA_TARGETS), "LoRA: the block matrices that get adapters (repeatable; "
                                "default all: qkv, proj, up, down)", flag="--lora-targets",
                                start=StartPolicy("keep", "fresh", "LoRA adapters"))


@dataclass
class TrainingConfig:
    """How long and how the loop runs."""

    dropout_schedule: str = option(
        "constant", "constant: --dropout throughout; linear: rise from --dropout-start to --dropout "
        "as training progresses (curriculum dropout; trains without torch.compile)",
        choices=("constant", "linear"),
    )
    dropout_start: float = option(0.0, "dropout rate at the start of a --dropout-schedule linear run",
                                  check="fraction")
    init_from: str | None = option(
        None, "start from this checkpoint's weights and tokenizer (fine-tuning): a new run with "
        "a fresh optimizer and schedule; the model shape comes from the checkpoint"
    )
    epochs: int = option(10, "passes over the training tokens", check="positive")
    max_steps: int | None = option(None, "stop after this many optimizer steps", check="positive")
    max_time: float | None = option(
        None, "stop after this many seconds, counted from the data loaded (compile and validation "
        "included; saved for --resume); with no shape set, the model is sized to it (--auto-size). "
        "+SECONDS with --resume: that much more time for a stopped or finished run",
        check="positive", parse=seconds, metavar="SECONDS", at_most=1e9)
    auto_size: bool = option(
        True, "with --max-time and no shape setting (width, depth, heads, context, batch), size the "
        "model and learning rate to the budget, this machine's measured speed and the data "
        "(training/sizing.py); --no-auto-size keeps the default shape. --max-steps alone does "
        "not size a model: it fixes the tokens, not the compute", start=StartPolicy("take", "fresh"),
    )
    batch_size: int = option(16, "sequences per micro-batch", check="positive", at_most=1 << 20)
    grad_accum_steps: int = option(
        1, "micro-batches per optimizer step (effective batch = batch x this)", check="positive"
    )
    overfit_batches: int = option(
        0, "debugging: train on the same N micro-batches every epoch; a sound model and optimizer "
        "drive their loss towards zero (0: off; use with --epochs)", check="non_negative"
    )
    eval_interval: int = option(250, "steps between validation evaluations", check="positive")
    eval_iters: int = option(20, "validation batches per evaluation", check="positive")
    log_interval: int = option(10, "steps between metrics records", check="positive")
    early_stopping: bool = option(False, "stop when validation loss stops improving")
    patience: int = option(5, "evaluations without improvement before stopping", check="positive")
    min_delta: float = option(0.0, "smallest decrease in validation loss that counts", check="non_negative")
    fsdp: bool = option(
        False, "with several processes: shard parameters, gradients and optimizer state over them (FSDP2, "
        "block by block), for a model too large for one device; checkpoints stay single files that load "
        "anywhere (training/sharding.py)"
    )
    fsdp_reshard_after_forward: bool = option(
        True, "--fsdp: free each block's gathered weights after its forward and gather them again for its "
        "backward (least memory); --no-fsdp-reshard-after-forward keeps them: one all-gather fewer per block"
    )
    activation_checkpointing: bool = option(
        False, "keep only each block's input in the forward pass and recompute its insides during the "
        "backward (torch.utils.checkpoint): much less activation memory for about a third more compute; "
        "the same losses"
    )
    skip_nonfinite: int = option(
        0, "steps whose loss is NaN or infinite to skip (no update; the data moves on) before the run "
        "stops; every such loss is caught on its own step (0: stop at the first)", check="non_negative"
    )
    spike_rollbacks: int = option(
        0, "when the loss spikes (above --spike-factor times its recent median for --spike-steps steps "
        "in a row), roll back to the last checkpoint from before the spike with the learning rate "
        "times --spike-lr-factor; at most N times, then stop (0: off). Needs a --checkpoint-interval "
        "shorter than the time a spike takes to build", check="non_negative"
    )
    spike_factor: float = option(2.0, "a loss above this multiple of its recent median counts as spiking",
                                 check="positive")
    spike_steps: int = option(4, "steps in a row above the threshold that make a spike", check="positive")
    spike_window: int = option(100, "steps of recent losses whose median the spike test compares against",
                               check="positive")
    spike_lr_factor: float = option(0.5, "each rollback multiplies the learning rate by this",
                                    check="probability")
    seed: int = option(1337, "random seed (same seed, same data: same losses on CPU)", check="seed")
    device: str = device_option("where to train")
    compile: bool = option(
        True, "train through torch.compile where a compiler is available (the first run of a "
        "model shape compiles for up to a minute; later runs reuse the on-disk cache)"
    )
    precision: str = option(
        "auto", "arithmetic of the forward and backward: auto (bf16 autocast where the hardware "
        "computes bf16 faster: CUDA with bf16, MPS, a CPU with native bf16 and a measured "
        "speedup; fp32 elsewhere), fp32, bf16, or fp16 (with gradient scaling)",
        choices=("auto", "fp32", "bf16", "fp16"),
        fixed_flags={"--mixed-precision": ("auto", "the former spelling of --precision auto"),
                     "--no-mixed-precision": ("fp32", "the former spelling of --precision fp32")},
    )
    profile: bool = option(
        False, "record a torch.profiler trace of a few steps after warm-up into OUTPUT_DIR/profile/ "
        "(TensorBoard, Perfetto) and print where the step time goes, MFU and peak memory"
    )
    profile_steps: str = option("5:8", "with --profile: record steps START+1 to END (the first START "
                                "steps, compilation included, are the warm-up)", metavar="START:END")


@dataclass
class CheckpointConfig:
    """What is written to the output directory, and how often."""

    output_dir: str = option("runs/latest", "directory for checkpoints and logs", aliases=("-o",))
    save_every: int = option(1, "write checkpoint_epoch_N.pt every N epochs", check="positive")
    keep_checkpoints: int = option(3, "keep only the newest K epoch checkpoints", check="positive")
    checkpoint_interval: int = option(
        500, "steps between resume_checkpoint.pt writes", check="positive"
    )
    sharded_resume: bool = option(
        False, "write the resume state with torch.distributed.checkpoint: every process writes its own "
        "shards, nothing is gathered on rank 0 (for models too large to gather), into "
        "OUTPUT_DIR/resume_checkpoint.dcp/step_N/; it resumes on any number of processes and any layout"
    )


@dataclass
class TrackingConfig:
    """Where metrics go besides metrics.json and loss_curve.png (always written)."""

    tensorboard: bool = option(
        False, "also write TensorBoard event files into the output directory "
        "(view them with: tensorboard --logdir OUTPUT_DIR/..)"
    )
    wandb: bool = option(
        False, "also log to Weights & Biases (needs the wandb package; logs offline into "
        "OUTPUT_DIR/wandb, to sync later, when no API key is set or WANDB_MODE=offline)"
    )
    wandb_project: str = option("fundamentallm", "W&B project name", check="non_empty")
    wandb_log_model: bool = option(False, "log final.pt to the W&B run at the end, as a model artifact")
    grad_check_interval: int = option(
        0, "steps between gradient checks: per-parameter gradient and weight norms in the metrics, "
        "gradient_flow.png, and a warning for NaN, Inf or large gradients (0: none)", check="non_negative"
    )
    histogram_interval: int = option(
        0, "steps between histograms of every weight and gradient in TensorBoard / W&B "
        "(0: none)", check="non_negative"
    )


@dataclass
class Config:
    """The whole run. Saved as config.yaml and inside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
