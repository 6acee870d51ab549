"""TrainState: everything needed to resume survives a weights_only save/load, RNGs included."""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from fundamentallm.model import GPT
from fundamentallm.training.state import TrainState, seed_everything


def new_state(model_config, scaler_enabled: bool = False) -> TrainState:
    model = GPT(model_config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return TrainState(model, optimizer, torch.amp.GradScaler("cpu", enabled=scaler_enabled))


def train_one_step(state: TrainState, vocab: int) -> None:
    idx = torch.randint(0, vocab, (2, 8))
    state.model(idx, idx).backward()
    state.optimizer.step()
    state.optimizer.zero_grad()


def draws() -> tuple[list[float], float, float]:
    return torch.rand(4).tolist(), random.random(), float(np.random.rand())


def test_state_dict_round_trips_through_weights_only_load(tmp_path, tiny_model_config):
    seed_everything(1)
    state = new_state(tiny_model_config)
    train_one_step(state, tiny_model_config.vocab_size)
    state.step, state.epoch, state.micro_batch, state.tokens = 1, 2, 3, 4096
    state.elapsed, state.best_val_loss, state.evals_without_improvement = 12.5, 2.25, 1
    state.stopping_reference, state.last_train_loss, state.last_val_loss = 2.5, 2.75, 2.3
    path = tmp_path / "state.pt"
    torch.save({"state": state.state_dict(), "model": state.model.state_dict()}, path)
    expected_draws = draws()  # what the run would have drawn next

    seed_everything(99)  # a fresh process: other weights, other RNG positions
    restored = new_state(tiny_model_config)
    loaded = torch.load(path, weights_only=True)
    restored.load_state_dict(loaded["state"], loaded["model"])

    assert draws() == expected_draws
    assert (restored.step, restored.epoch, restored.micro_batch, restored.tokens) == (1, 2, 3, 4096)
    assert (restored.elapsed, restored.best_val_loss, restored.evals_without_improvement) == (12.5, 2.25, 1)
    # the early-stopping reference is kept apart from the best loss (it moves only by --min-delta)
    assert restored.stopping_reference == 2.5
    assert (restored.last_train_loss, restored.last_val_loss) == (2.75, 2.3)
    for a, b in zip(state.model.parameters(), restored.model.parameters()):
        assert torch.equal(a, b)
    before, after = state.optimizer.state_dict(), restored.optimizer.state_dict()
    assert before["param_groups"] == after["param_groups"]
    for key, moments in before["state"].items():
        assert torch.equal(moments["exp_avg"], after["state"][key]["exp_avg"])
        assert torch.equal(moments["exp_avg_sq"], after["state"][key]["exp_avg_sq"])


def test_resumed_training_matches_uninterrupted_training(tmp_path, tiny_model_config):
    vocab = tiny_model_config.vocab_size
    seed_everything(3)
    state = new_state(tiny_model_config)
    train_one_step(state, vocab)
    torch.save({"state": state.state_dict(), "model": state.model.state_dict()}, tmp_path / "s.pt")
    train_one_step(state, vocab)  # the uninterrupted run's next step

    seed_everything(4)
    resumed = new_state(tiny_model_config)
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    resumed.load_state_dict(loaded["state"], loaded["model"])
    train_one_step(resumed, vocab)  # draws the same batch, applies the same update
    for a, b in zip(state.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_default_best_val_loss_is_infinite_and_survives(tmp_path, tiny_model_config):
    state = new_state(tiny_model_config)
    torch.save(state.state_dict(), tmp_path / "s.pt")
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)
    assert math.isinf(loaded["counters"]["best_val_loss"])
    assert math.isinf(loaded["counters"]["stopping_reference"])
    assert loaded["counters"]["evals_without_improvement"] == 0
    assert math.isnan(loaded["counters"]["last_train_loss"])


def test_enabled_grad_scaler_state_is_saved_and_restored(tmp_path, tiny_model_config):
    state = new_state(tiny_model_config, scaler_enabled=True)
    state.scaler.scale(torch.ones(()))  # initialises the scale
    state.scaler.update(1024.0)
    torch.save(state.state_dict(), tmp_path / "s.pt")
    restored = new_state(tiny_model_config, scaler_enabled=True)
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True),
                             state.model.state_dict())
    assert restored.scaler.get_scale() == 1024.0


def test_seed_everything_is_reproducible():
    seed_everything(7)
    first = draws()
    seed_everything(7)
    assert draws() == first
