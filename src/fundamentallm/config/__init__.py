"""The typed config tree (`schema`) and how YAML files and flags map onto it (`loading`)."""

from fundamentallm.config.loading import (
    apply_mapping,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    load_yaml,
    validate,
)
from fundamentallm.config.schema import (
    CheckpointConfig,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrackingConfig,
    TrainingConfig,
)

__all__ = [
    "CheckpointConfig",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrackingConfig",
    "TrainingConfig",
    "apply_mapping",
    "config_from_dict",
    "config_to_dict",
    "dump_yaml",
    "load_yaml",
    "validate",
]
