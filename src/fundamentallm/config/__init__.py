"""The typed config tree (`schema`), how YAML files and flags map onto it (`loading`), and
the order in which defaults, a checkpoint, a file and flags win (`sources`)."""

from fundamentallm.config.loading import (
    apply_mapping,
    config_from_dict,
    config_to_dict,
    config_warnings,
    dump_yaml,
    load_yaml,
    validate,
)
from fundamentallm.config.sources import ConfigSources
from fundamentallm.config.schema import (
    AddedSeconds,
    CheckpointConfig,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    TrainingConfig,
)

__all__ = [
    "AddedSeconds",
    "CheckpointConfig",
    "Config",
    "ConfigSources",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrackingConfig",
    "TrainingConfig",
    "apply_mapping",
    "config_from_dict",
    "config_to_dict",
    "config_warnings",
    "dump_yaml",
    "load_yaml",
    "validate",
]
