"""Where a run's settings come from, and in which order they win:

    defaults  <-  a checkpoint's config  <-  the --config file  <-  flags

A resumed run continues the checkpoint's whole config; a fine-tuned run (`--init-from`)
takes only what its weights need. Which setting does what is declared once, on the field
(`option(..., start=...)`, see `StartPolicy` in schema.py); this module applies it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundamentallm.config.loading import (
    FieldInfo,
    apply_flags,
    apply_mapping,
    config_from_dict,
    fields,
    load_yaml,
)
from fundamentallm.config.schema import Config
from fundamentallm.errors import UserError

PRESETS_DIR = Path("configs")


def preset_path(name: str) -> Path:
    """`--config small` means configs/small.yaml when no file `small` exists."""
    path = Path(name)
    if not path.exists() and (PRESETS_DIR / f"{name}.yaml").exists():
        return PRESETS_DIR / f"{name}.yaml"
    return path


def start_mode(info: FieldInfo, resumed: bool) -> str:
    policy = info.meta["start"]
    return policy.resumed if resumed else policy.fine_tuned


@dataclass
class ConfigSources:
    """A run's settings before they are resolved: the config file and the flags given."""

    file: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)  # "section.name" -> value
    data: list[str] = field(default_factory=list)  # training files given as arguments

    @classmethod
    def of(cls, cfg: Config) -> "ConfigSources":
        """A resolved config as sources: each setting that differs from its default, as a flag."""
        default = Config()
        flags = {info.key: getattr(getattr(cfg, info.section), info.name) for info in fields()
                 if getattr(getattr(cfg, info.section), info.name)
                 != getattr(getattr(default, info.section), info.name)}
        return cls(flags=flags)

    def given(self) -> set[str]:
        """The settings ("section.name") the user chose: in the config file or as flags."""
        keys = set(self.flags)
        if self.file:
            mapping = load_yaml(preset_path(self.file))
            if isinstance(mapping, dict):
                keys |= {f"{section}.{name}" for section, values in mapping.items()
                         if isinstance(values, dict) for name in values}
        return keys

    def resolve(self, saved: dict[str, Any] | None = None, *, resumed: bool = True,
                source: str = "checkpoint") -> Config:
        """The config of a run; `saved` is the config stored in a checkpoint it starts from
        (`resumed`: continuing its training state; otherwise fine-tuning its weights)."""
        cfg = Config()
        saved_cfg = config_from_dict(saved, source) if saved is not None else None
        if saved_cfg is not None:
            for info in fields():
                if start_mode(info, resumed) != "fresh":
                    set_value(cfg, info, get_value(saved_cfg, info))
        if self.file:
            path = preset_path(self.file)
            apply_mapping(cfg, load_yaml(path), str(path))
        apply_flags(cfg, self.flags)
        if self.data:
            cfg.data.train = list(self.data)
        if saved_cfg is not None:
            check_kept(cfg, saved_cfg, source, resumed)
        return cfg


def get_value(cfg: Config, info: FieldInfo) -> Any:
    return getattr(getattr(cfg, info.section), info.name)


def set_value(cfg: Config, info: FieldInfo, value: Any) -> None:
    setattr(getattr(cfg, info.section), info.name,
            list(value) if isinstance(value, list) else value)


def check_kept(cfg: Config, saved: Config, source: str, resumed: bool) -> None:
    """Every setting a started run must keep still has the checkpoint's value."""
    run = "a resumed run" if resumed else "a fine-tuned run"
    for info in fields():
        mine, theirs = get_value(cfg, info), get_value(saved, info)
        if start_mode(info, resumed) == "keep" and mine != theirs:
            raise UserError(f"{source}: {run} keeps its {info.meta['start'].part}; "
                            f"{info.flag or info.key} {mine} (checkpoint: {theirs})")

