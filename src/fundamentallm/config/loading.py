"""Mapping YAML files and flags onto the config tree, and checking the result.

Every error names the setting the way the user wrote it: the flag (`--model-dim`) when it
came from the command line, `file.yaml: model.model_dim` when it came from a file.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterator

import yaml

from fundamentallm.config.schema import CHECKS, INT_LIMIT, LORA_TARGETS, Config
from fundamentallm.errors import UserError
from fundamentallm.tokenizers.base import RESERVED


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """One settable field: where it lives, its type, and its flag."""

    section: str
    name: str
    kind: type  # int, float, str, bool or list
    optional: bool
    meta: typing.Mapping[str, Any]
    item: type = str  # a list's element type

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def flag(self) -> str | None:
        flag = self.meta["flag"]
        return ("--" + self.name.replace("_", "-")) if flag == "" else flag


def class_fields(cls: type, section: str = "") -> Iterator[FieldInfo]:
    """Every `option(...)` field of one dataclass (a config section, SamplingOptions)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        kind = args[0] if optional else (typing.get_origin(hint) or hint)
        item = (typing.get_args(hint) or (str,))[0] if kind is list else str
        yield FieldInfo(section, f.name, kind, optional, f.metadata, item)


def fields() -> Iterator[FieldInfo]:
    """Every field of the config tree, section by section."""
    for section in dataclasses.fields(Config):
        yield from class_fields(section.default_factory, section.name)


def field_by_key() -> dict[str, FieldInfo]:
    return {f.key: f for f in fields()}


def coerce(info: FieldInfo, value: Any, where: str) -> Any:
    """Check a value's type (and convert int -> float); raise a UserError naming `where`."""
    if value is None:
        if info.optional:
            return None
        raise UserError(f"{where}: a value is required")
    if info.meta["const"] is not None and value is info.meta["const"]:
        return value  # the flag given bare
    if info.kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = value if isinstance(value, float) else float(value)  # (keeps AddedSeconds, --max-time +S)
    elif info.kind is list:
        value = [info.item(v) for v in value] if isinstance(value, (list, tuple)) else [info.item(value)]
    elif not isinstance(value, info.kind) or (info.kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: expected {info.kind.__name__}, got {value!r}")
    choices = info.meta["choices"]
    if choices and value not in choices:
        raise UserError(f"{where}: unknown value {value!r} (choose from {', '.join(choices)})")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where} must be a finite number (got {value})")
    check = info.meta["check"]
    if check:
        ok, phrase = CHECKS[check]
        if not ok(value):
            raise UserError(f"{where} {phrase} (got {value})")
    within(info, value, where)
    return value


def within(info: FieldInfo, value: Any, where: str) -> None:
    """A number above the field's sane range (`at_most`; for whole numbers INT_LIMIT) is refused."""
    limit = info.meta.get("at_most")
    whole = info.kind is int or (info.kind is list and info.item is int)
    if limit is None and whole and info.meta["check"] not in ("seed", "port"):
        limit = INT_LIMIT
    for number in value if isinstance(value, list) else [value]:
        if limit is not None and isinstance(number, (int, float)) and number > limit:
            shown = f"{number:,}" if isinstance(number, int) else f"{number:g}"
            raise UserError(f"{where} must be at most {limit:,} (got {shown})")


def options_from(cls: type, values: dict[str, Any]) -> Any:
    """A command's options (a dataclass of `option(...)` fields) from name -> value; each
    value is checked, and an error names the flag."""
    chosen = {}
    for info in class_fields(cls):
        if info.name in values:
            chosen[info.name] = coerce(info, values[info.name], info.flag if info.flag and not
                                       info.meta["positional"] else info.name.upper())
    return cls(**chosen)


# Keys of older configs (and of the configs saved in older checkpoints), each read as the key
# that replaced it: old key (a bool) → (new key, the old value → the new one).
RENAMED_KEYS = {
    "training.mixed_precision": ("training.precision", lambda mixed: "auto" if mixed else "fp32"),
}


def apply_mapping(cfg: Config, mapping: dict[str, Any], source: str) -> None:
    """Set fields from a nested mapping such as a parsed YAML file; unknown keys are errors."""
    known = field_by_key()
    sections = [f.name for f in dataclasses.fields(Config)]
    if not isinstance(mapping, dict):
        raise UserError(f"{source}: expected a mapping of sections ({', '.join(sections)})")
    for section, values in mapping.items():
        if section not in sections:
            raise UserError(f"{source}: unknown section {section!r} (sections: {', '.join(sections)})")
        values = {} if values is None else values  # a section with every key commented out
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {section!r} must hold a mapping of settings")
        for name, value in values.items():
            if f"{section}.{name}" in RENAMED_KEYS:
                new_key, convert = RENAMED_KEYS[f"{section}.{name}"]
                if not isinstance(value, bool):
                    raise UserError(f"{source}: {section}.{name}: expected bool, got {value!r}")
                name, value = new_key.split(".")[1], convert(value)
            info = known.get(f"{section}.{name}")
            if info is None:
                raise UserError(f"{source}: unknown key '{section}.{name}'")
            setattr(getattr(cfg, section), name, coerce(info, value, f"{source}: {info.key}"))


def apply_flags(cfg: Config, values: dict[str, Any]) -> None:
    """Set fields from parsed flags, keyed `section.name`; errors name the flag."""
    known = field_by_key()
    for key, value in values.items():
        info = known[key]
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, coerce(info, value, info.flag or key))


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `3e-4` (no dot) as a string; people mean a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable YAML config ({first_line})") from None
    return data or {}


def config_to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    cfg = Config()
    apply_mapping(cfg, data, source)
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def nearest_head_counts(model_dim: int, num_heads: int) -> list[int]:
    """The valid head counts just below and just above `num_heads`: those that divide
    `model_dim` into an even head size (RoPE rotates pairs of channels)."""
    valid = [h for h in range(1, model_dim + 1) if model_dim % h == 0 and (model_dim // h) % 2 == 0]
    below = [h for h in valid if h < num_heads][-1:]
    above = [h for h in valid if h > num_heads][:1]
    return below + above


def parse_steps(text: str) -> tuple[int, int]:
    """"START:END" → (START, END): record steps START+1 .. END."""
    start, sep, end = text.partition(":")
    try:
        first, last = int(start), int(end)
    except ValueError:
        first = last = -1
    if not sep or not 0 <= first < last:
        raise UserError(f"--profile-steps {text!r}: give START:END with 0 <= START < END, e.g. 5:8")
    return first, last


def validate(cfg: Config) -> None:
    """Cross-field checks that a single field's check cannot make."""
    m = cfg.model
    if m.model_dim % m.num_heads or (m.model_dim // m.num_heads) % 2:
        near = " or ".join(str(h) for h in nearest_head_counts(m.model_dim, m.num_heads)) or "none"
        reason = "does not divide" if m.model_dim % m.num_heads else "leaves an odd head size for"
        raise UserError(
            f"--num-heads {m.num_heads} {reason} --model-dim {m.model_dim}; "
            f"nearest valid head counts: {near}"
        )
    if m.num_kv_heads is not None and m.num_heads % m.num_kv_heads:
        raise UserError(f"--num-kv-heads {m.num_kv_heads} does not divide --num-heads {m.num_heads}")
    d = cfg.data
    if d.bpe_vocab_size is not None and d.tokenizer != "bpe":
        raise UserError(f"--vocab-size applies to --tokenizer bpe only (the {d.tokenizer} "
                        "tokenizer's vocabulary is fixed by the text)")
    if d.bpe_vocab_size is not None and d.bpe_vocab_size < 256:
        raise UserError(f"--vocab-size {d.bpe_vocab_size}: byte-level BPE needs at least 256 (one per byte)")
    if d.train_on != "assistant" and d.format != "chat":
        raise UserError(f"--train-on {d.train_on} applies to --format chat only (text trains on every token)")
    if d.doc_mask and d.doc_boundary == "none":
        raise UserError("--doc-mask keeps documents apart by their end-of-text tokens: it needs --doc-boundary eos "
                        "(or auto), not none")
    if d.format == "chat" and (d.augment or d.augment_file):
        raise UserError(f"--{'augment' if d.augment else 'augment-file'} works on running text, not on conversations "
                        "(--format chat): leave one of them out")
    if d.format == "chat" and (d.doc_separator or d.doc_boundary == "none"):
        raise UserError("--format chat: each conversation is a document, ended by the end-of-text token "
                        "(--doc-separator and --doc-boundary none do not apply)")
    for text in d.special_tokens:
        if not text.strip():
            raise UserError("--special-tokens: a special token must have visible text")
        if text in RESERVED:
            raise UserError(f"--special-tokens {text!r} is reserved already (reserved: {', '.join(RESERVED)})")
    if d.doc_separator is not None and not d.doc_separator:
        raise UserError("--doc-separator must not be empty")
    tr = cfg.training
    if tr.dropout_start and tr.dropout_schedule == "constant":
        raise UserError("--dropout-start applies only with --dropout-schedule linear")
    if tr.early_stopping and d.validation_data is None and d.val_split == 0:
        raise UserError("--early-stopping needs validation data to watch: give --validation-data, "
                        "or a --val-split above 0")
    if tr.profile:
        parse_steps(tr.profile_steps)
    if tr.overfit_batches % tr.grad_accum_steps:
        raise UserError(f"--overfit-batches {tr.overfit_batches} must be a multiple of --grad-accum-steps "
                        f"{tr.grad_accum_steps} (each step uses that many micro-batches)")
    t = cfg.tracking
    if t.histogram_interval and not (t.tensorboard or t.wandb):
        raise UserError(f"--histogram-interval {t.histogram_interval} needs --tensorboard or --wandb "
                        "(histograms are drawn there)")
    if t.wandb_log_model and not t.wandb:
        raise UserError("--wandb-log-model needs --wandb")
    o = cfg.optim
    if o.freeze_layers > m.num_layers:
        raise UserError(f"--freeze-layers {o.freeze_layers} is more than the model's {m.num_layers} "
                        "layers (--num-layers)")
    if o.lookahead_alpha != 0.5 and not o.lookahead_steps:
        raise UserError("--lookahead-alpha applies only with --lookahead-steps N")
    if o.min_lr is not None and o.min_lr > o.learning_rate:
        raise UserError(f"--min-lr {o.min_lr} is above --learning-rate {o.learning_rate}")
    lora = cfg.lora
    if lora.rank:
        if not tr.init_from:
            raise UserError("--lora-rank adapts a trained model: name it with --init-from CHECKPOINT")
        if tr.fsdp:
            raise UserError("--lora-rank does not work with --fsdp yet (the adapters are not sharded); leave one "
                            "of them out")
        if m.dropconnect:
            raise UserError("--lora-rank freezes the weights --dropconnect would drop: leave one of them out")
    elif lora.alpha is not None or lora.targets != list(LORA_TARGETS):
        raise UserError(f"--{'lora-alpha' if lora.alpha is not None else 'lora-targets'} applies only with "
                        "--lora-rank R")
    unknown = [t for t in lora.targets if t not in LORA_TARGETS]
    if unknown or not lora.targets:
        raise UserError(f"--lora-targets {unknown[0] if unknown else '(none)'}: choose from {', '.join(LORA_TARGETS)}")
    if cfg.checkpoint.sharded_resume and o.lookahead_steps:
        raise UserError("--sharded-resume does not work with --lookahead-steps yet (its slow weights are not "
                        "sharded); leave one of them out")


def config_warnings(cfg: Config) -> list[str]:
    """Settings that were changed from their defaults but cannot act in this run."""
    default, o, found = Config(), cfg.optim, []
    if cfg.training.profile_steps != default.training.profile_steps and not cfg.training.profile:
        found.append("--profile-steps applies only with --profile; ignored")
    if o.cooldown_fraction != default.optim.cooldown_fraction and o.lr_schedule != "wsd":
        found.append(f"--cooldown-fraction applies only with --lr-schedule wsd (this run: "
                     f"{o.lr_schedule}); ignored")
    if o.optimizer != "muon":
        changed = [f"--{name.replace('_', '-')}" for name in ("muon_lr", "muon_momentum")
                   if getattr(o, name) != getattr(default.optim, name)]  # (muon_lr's default is None)
        if changed:
            verb = "applies" if len(changed) == 1 else "apply"
            found.append(f"{' and '.join(changed)} {verb} only with --optimizer muon "
                         f"(this run: {o.optimizer}); ignored")
    if o.embedding_lr is not None and cfg.model.tie_embeddings:
        found.append("--embedding-lr applies only to an untied embedding (this run: --tie-embeddings, where the "
                     "embedding is also the output head and trains at --learning-rate); ignored")
    d = cfg.data
    if d.format == "chat":
        unused = [flag for flag, changed in (("--token-cache", d.token_cache != default.data.token_cache),
                                             ("--text-field", d.text_field != default.data.text_field),
                                             ("--separator", d.separator != default.data.separator)) if changed]
        if unused:
            found.append(f"{', '.join(unused)}: conversations are read from their 'messages' and held in memory "
                         "(--format chat); ignored")
    return found
