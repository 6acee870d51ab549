"""The config tree: defaults, YAML mappings, flags, value checks and the YAML round trip."""

from __future__ import annotations

import pytest
import yaml

from fundamentallm.config import (
    Config,
    apply_mapping,
    config_from_dict,
    config_to_dict,
    dump_yaml,
    load_yaml,
    validate,
)
from fundamentallm.config.loading import apply_flags, nearest_head_counts
from fundamentallm.errors import UserError


def test_defaults_validate():
    cfg = Config()
    validate(cfg)  # must not raise
    assert cfg.model.model_dim % cfg.model.num_heads == 0


def test_yaml_mapping_sets_fields_and_leaves_the_rest_at_defaults():
    cfg = Config()
    apply_mapping(cfg, {"model": {"model_dim": 64, "num_heads": 2},
                        "optim": {"lr_schedule": "linear"}}, "run.yaml")
    assert cfg.model.model_dim == 64
    assert cfg.model.num_heads == 2
    assert cfg.optim.lr_schedule == "linear"
    assert cfg.model.num_layers == Config().model.num_layers
    assert cfg.training == Config().training


def test_load_yaml_reads_a_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  model_dim: 48\ntraining:\n  seed: 7\n", encoding="utf-8")
    cfg = config_from_dict(load_yaml(path), str(path))
    assert (cfg.model.model_dim, cfg.training.seed) == (48, 7)


def test_load_yaml_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such config file"):
        load_yaml(tmp_path / "absent.yaml")


def test_unknown_key_raises_naming_the_key():
    with pytest.raises(UserError, match=r"run\.yaml: unknown key 'model\.modle_dim'"):
        apply_mapping(Config(), {"model": {"modle_dim": 64}}, "run.yaml")


def test_unknown_section_raises_naming_it():
    with pytest.raises(UserError, match=r"run\.yaml: unknown .*'trainng"):
        apply_mapping(Config(), {"trainng": {"epochs": 3}}, "run.yaml")
    with pytest.raises(UserError, match=r"unknown section 'verbose'"):
        apply_mapping(Config(), {"verbose": True}, "run.yaml")


def test_non_mapping_top_level_is_rejected():
    with pytest.raises(UserError, match="expected a mapping"):
        apply_mapping(Config(), ["model"], "run.yaml")  # type: ignore[arg-type]


def test_unknown_empty_section_is_rejected():
    with pytest.raises(UserError, match="trainng"):
        apply_mapping(Config(), {"trainng": {}}, "run.yaml")


def test_known_section_without_a_mapping_is_not_called_unknown():
    with pytest.raises(UserError, match="model") as info:
        apply_mapping(Config(), {"model": 128}, "run.yaml")
    assert "unknown section" not in str(info.value)


def test_yaml_error_names_file_and_key():
    with pytest.raises(UserError, match=r"run\.yaml: model\.model_dim must be greater than 0"):
        apply_mapping(Config(), {"model": {"model_dim": 0}}, "run.yaml")


@pytest.mark.parametrize(
    ("key", "value", "flag"),
    [
        ("model.model_dim", 0, "--model-dim"),
        ("model.num_layers", -1, "--num-layers"),
        ("model.num_heads", 0, "--num-heads"),
        ("model.context_length", 0, "--context-length"),
        ("model.dropout", 1.0, "--dropout"),
        ("model.dropout", -0.1, "--dropout"),
        ("training.batch_size", 0, "--batch-size"),
        ("training.epochs", -3, "--epochs"),
        ("optim.learning_rate", 0.0, "--learning-rate"),
        ("optim.weight_decay", -0.5, "--weight-decay"),
        ("optim.lr_schedule", "exponential", "--lr-schedule"),
        ("data.val_split", 1.0, "--val-split"),
    ],
)
def test_bad_flag_value_raises_naming_the_flag(key, value, flag):
    cfg = Config()
    with pytest.raises(UserError) as info:
        apply_flags(cfg, {key: value})
    message = str(info.value)
    assert message.startswith(flag), message
    assert str(value) in message


def test_unknown_choice_lists_the_valid_ones():
    with pytest.raises(UserError, match="cosine, linear, wsd, constant"):
        apply_flags(Config(), {"optim.lr_schedule": "exponential"})


def test_flags_set_values():
    cfg = Config()
    apply_flags(cfg, {"model.model_dim": 64, "optim.lr_schedule": "constant",
                      "training.precision": "bf16"})
    assert cfg.model.model_dim == 64
    assert cfg.optim.lr_schedule == "constant"
    assert cfg.training.precision == "bf16"


@pytest.mark.parametrize(("mixed", "precision"), [(True, "auto"), (False, "fp32")])
def test_older_configs_mixed_precision_key_reads_as_precision(mixed, precision):
    """Configs written before --precision (and the configs inside older checkpoints) said
    `mixed_precision: true|false`; they keep meaning what they meant."""
    cfg = Config()
    apply_mapping(cfg, {"training": {"mixed_precision": mixed}}, "old.yaml")
    assert cfg.training.precision == precision


def test_older_mixed_precision_key_must_be_a_bool():
    with pytest.raises(UserError, match="old.yaml: training.mixed_precision: expected bool, got 'no'"):
        apply_mapping(Config(), {"training": {"mixed_precision": "no"}}, "old.yaml")


def test_precision_rejects_other_values():
    with pytest.raises(UserError, match="--precision.*auto, fp32, bf16, fp16"):
        apply_flags(Config(), {"training.precision": "fp8"})


def test_heads_not_dividing_model_dim_names_both_numbers_and_nearest_valid_counts():
    cfg = Config()
    cfg.model.model_dim, cfg.model.num_heads = 32, 6
    with pytest.raises(UserError) as info:
        validate(cfg)
    message = str(info.value)
    assert "--num-heads 6" in message
    assert "--model-dim 32" in message
    assert "4 or 8" in message  # both 2 away from 6, and both give an even head size (8, 4)


@pytest.mark.parametrize(("model_dim", "num_heads", "expected"), [
    (32, 5, [4, 8]),  # the valid counts just below and just above, not the nearest by distance
    (32, 6, [4, 8]),
    (32, 3, [2, 4]),
    (32, 7, [4, 8]),
    (24, 8, [6, 12]),  # 8 divides 24 but leaves an odd head size (3)
    (32, 100, [16]),  # nothing valid above
    (2, 3, [1]),
    (6, 2, [1, 3]),
])
def test_nearest_head_counts_are_the_valid_ones_just_below_and_above(model_dim, num_heads, expected):
    assert nearest_head_counts(model_dim, num_heads) == expected
    for h in expected:
        assert model_dim % h == 0 and (model_dim // h) % 2 == 0


def test_heads_message_names_the_counts_just_below_and_above():
    cfg = Config()
    cfg.model.model_dim, cfg.model.num_heads = 32, 5
    with pytest.raises(UserError, match=r"--num-heads 5 does not divide --model-dim 32; "
                                        r"nearest valid head counts: 4 or 8$"):
        validate(cfg)


def test_odd_head_size_is_rejected():
    cfg = Config()
    cfg.model.model_dim, cfg.model.num_heads = 24, 8  # head size 3: RoPE needs pairs
    with pytest.raises(UserError, match="odd head size"):
        validate(cfg)


def test_min_lr_above_learning_rate_is_rejected():
    cfg = Config()
    cfg.optim.learning_rate, cfg.optim.min_lr = 1e-3, 1e-2
    with pytest.raises(UserError, match="--min-lr"):
        validate(cfg)


def test_int_is_accepted_for_float_fields():
    cfg = Config()
    apply_mapping(cfg, {"optim": {"learning_rate": 1, "min_lr": 0}}, "run.yaml")
    assert cfg.optim.learning_rate == 1.0 and isinstance(cfg.optim.learning_rate, float)
    assert cfg.optim.min_lr == 0.0 and isinstance(cfg.optim.min_lr, float)


@pytest.mark.parametrize(("key", "value"), [("model.model_dim", True),
                                            ("training.epochs", False),
                                            ("optim.learning_rate", True)])
def test_bool_is_rejected_for_numeric_fields(key, value):
    with pytest.raises(UserError, match="expected"):
        apply_flags(Config(), {key: value})


def test_string_is_rejected_for_int_fields():
    with pytest.raises(UserError, match=r"model\.model_dim: expected int"):
        apply_mapping(Config(), {"model": {"model_dim": "64"}}, "run.yaml")


def test_none_only_for_optional_fields():
    cfg = Config()
    apply_mapping(cfg, {"training": {"max_steps": None}}, "run.yaml")
    assert cfg.training.max_steps is None
    with pytest.raises(UserError, match="a value is required"):
        apply_mapping(cfg, {"model": {"model_dim": None}}, "run.yaml")


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  learning_rate: 3e-4\n", encoding="utf-8")
    cfg = config_from_dict(load_yaml(path), str(path))
    assert cfg.optim.learning_rate == pytest.approx(3e-4)


def test_dump_yaml_round_trip_equals_the_original():
    cfg = Config()
    cfg.model.model_dim, cfg.model.num_heads, cfg.model.dropout = 48, 6, 0.25
    cfg.data.train = ["a.txt", "dir"]
    cfg.data.validation_data = "val.txt"
    cfg.optim.learning_rate, cfg.optim.min_lr = 3e-4, 1e-5
    cfg.training.max_steps, cfg.training.max_time = 123, 2.5
    cfg.training.early_stopping = True
    cfg.checkpoint.output_dir = "runs/x"
    restored = config_from_dict(yaml.safe_load(dump_yaml(cfg)), "dumped")
    assert restored == cfg
    assert config_to_dict(restored) == config_to_dict(cfg)


def test_default_round_trip():
    assert config_from_dict(yaml.safe_load(dump_yaml(Config()))) == Config()


@pytest.mark.parametrize("section, values, message", [
    ("optim", {"lookahead_alpha": 0.8}, "--lookahead-alpha applies only with --lookahead-steps N"),
    ("optim", {"freeze_layers": 5}, "--freeze-layers 5 is more than the model's 4 layers"),
    ("training", {"overfit_batches": 3, "grad_accum_steps": 2}, "--overfit-batches 3 must be a multiple"),
    ("tracking", {"histogram_interval": 10}, "--histogram-interval 10 needs --tensorboard or --wandb"),
    ("tracking", {"wandb_log_model": True}, "--wandb-log-model needs --wandb"),
])
def test_settings_that_need_another_are_checked(section, values, message):
    cfg = Config()
    for name, value in values.items():
        setattr(getattr(cfg, section), name, value)
    with pytest.raises(UserError, match=message.replace("'", ".")):
        validate(cfg)
