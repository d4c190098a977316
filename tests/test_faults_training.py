"""Faults inside training (issue 13): a non-finite loss, gradient or weight never reaches a checkpoint or a
LoRA file; an interrupt lands between steps, so the saved state is exactly the last completed step's."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file

from maskedit.errors import MaskEditError
from maskedit.method.lora import save_lora
from maskedit.models.loading import build_tiny_pipeline
from maskedit.method.training import (
    CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, LoraTrainer, TrainConfig, TrainingDiverged, TrainItem,
    interrupts_between_steps,
)
from maskedit.method.conditioning import stage1_sample

from conftest import make_synthetic_clip

CONFIG = TrainConfig(steps=4, rank=4, alpha=4.0, learning_rate=1e-3, checkpoint_every=1)


def trainer(folder, config=CONFIG):
    frames, region = make_synthetic_clip()
    return LoraTrainer(build_tiny_pipeline(), [TrainItem(stage1_sample(frames, region, "p3rs0n, a box"))], config, folder)


def lora_weights(t: LoraTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.params]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """LoRA weights and losses of an uninterrupted 4-step run."""
    t = trainer(tmp_path_factory.mktemp("whole"))
    t.train()
    return lora_weights(t), list(t.state.losses)


def finish_from_checkpoint(folder) -> LoraTrainer:
    resumed = trainer(folder)
    assert resumed.resume()
    resumed.train()
    return resumed


def assert_same(weights, losses, t: LoraTrainer):
    assert t.state.losses == losses
    assert all(torch.equal(a, b) for a, b in zip(weights, lora_weights(t)))


def test_a_nan_loss_stops_before_the_optimizer_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, nan_loss_at,
                                                                                   whole):
    t = trainer(tmp_path)
    nan_loss_at(3)
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 3 of 4; lower the learning rate "
                                               r"\(now 0.001; e.g. 0.0001\) or the LoRA alpha \(now 4; .*"
                                               r"the last good checkpoint \(step 2\) is kept"):
        t.train()
    state = json.loads((tmp_path / CHECKPOINT_STATE).read_text())
    assert state["step"] == 2 and t.state.step == 2
    saved = load_file(str(tmp_path / CHECKPOINT_WEIGHTS))
    assert all(torch.equal(saved[f"param.{i}"], p.detach()) for i, p in enumerate(t.params))  # weights untouched
    assert torch.equal(saved["generator"], t.generator.get_state())  # the draws of the bad step were undone
    with pytest.raises(TrainingDiverged):
        t.save_checkpoint()  # a diverged trainer never writes again
    monkeypatch.undo()  # the loss is finite again
    assert_same(*whole, finish_from_checkpoint(tmp_path))  # nothing of the bad step reached the checkpoint


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch):
    t = trainer(tmp_path)
    original, calls = torch.optim.AdamW.step, [0]

    def poisoned_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned_step)
    with pytest.raises(TrainingDiverged, match="the LoRA weights became NaN or infinite at step 3 of 4"):
        t.train()
    assert json.loads((tmp_path / CHECKPOINT_STATE).read_text())["step"] == 2
    assert all(torch.isfinite(v).all() for v in load_file(str(tmp_path / CHECKPOINT_WEIGHTS)).values()
               if v.is_floating_point())
    with pytest.raises(MaskEditError, match="NaN or infinite weights"):
        save_lora(t.pipe, tmp_path / "lora", {})
    assert not (tmp_path / "lora" / "lora.safetensors").exists()


def test_resuming_a_nan_checkpoint_is_refused(tmp_path):
    t = trainer(tmp_path, TrainConfig(steps=2, rank=4, alpha=4.0, checkpoint_every=1))
    t.train()
    tensors = load_file(str(tmp_path / CHECKPOINT_WEIGHTS))
    tensors["optimizer.0.exp_avg"] = torch.full_like(tensors["optimizer.0.exp_avg"], float("nan"))
    save_file(tensors, str(tmp_path / CHECKPOINT_WEIGHTS))
    with pytest.raises(MaskEditError, match="holds NaN or infinite values: the run that wrote it diverged"):
        trainer(tmp_path).resume()


def test_an_interrupt_after_the_draws_saves_the_last_completed_step(tmp_path, monkeypatch, whole):
    """The failure of issue 13 §6: Ctrl-C landed mid-step after the noise draws, and the checkpoint held an
    advanced generator. Now any exception before the optimizer step leaves the last step's state."""
    t = trainer(tmp_path, TrainConfig(steps=4, rank=4, alpha=4.0, learning_rate=1e-3, checkpoint_every=0))
    original, calls = LoraTrainer.flow_matching_loss, [0]

    def interrupted_third(self, sample, step_t, noise):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return original(self, sample, step_t, noise)

    monkeypatch.setattr(LoraTrainer, "flow_matching_loss", interrupted_third)
    with pytest.raises(KeyboardInterrupt):
        t.train()
    assert json.loads((tmp_path / CHECKPOINT_STATE).read_text())["step"] == 2
    monkeypatch.undo()  # the loss is finite again
    assert_same(*whole, finish_from_checkpoint(tmp_path))


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (pytest may run with another), restored afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_is_held_until_the_step_ends(python_sigint):
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_between_steps():
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("the rest of the step ran")
    assert finished == ["the rest of the step ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait
        with interrupts_between_steps():
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            finished.append("never")
    assert finished == ["the rest of the step ran"]
    with interrupts_between_steps():
        pass  # no signal, nothing raised
