"""Exact resume of the training loop with the faster paths on: best-fit packing, tiled loss,
recomputed norms and MLP activation, the lean LoRA forward."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from sfthelpers import TINY_BASE

from runner.llm.sft.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from runner.llm.sft.data import DataStream, Example
from runner.llm.sft.model import LoraSettings, SpeedOptions, adapter_state, load_for_training
from runner.llm.sft.train import SftTrainer, TrainConfig

CPU = torch.device("cpu")
STEPS = 6


def _trainer() -> SftTrainer:
    r = random.Random(4)
    examples = [Example(tuple(r.randrange(5, 200) for _ in range(n)), max(1, n // 3))
                for n in (r.randint(8, 60) for _ in range(60))]
    stream = DataStream(examples, 9, 3, 64, True, 0, best_fit=True)
    model = load_for_training(str(TINY_BASE), CPU, LoraSettings(r=4, dropout=0.1), 9, 0.5,
                              speed=SpeedOptions(lean_lora=True, remat=True))
    cfg = TrainConfig(learning_rate=1e-3, total_steps=STEPS, tiled_loss=True)
    return SftTrainer(model, stream, cfg, CPU)


def test_best_fit_tiled_run_resumes_bit_for_bit(tmp_path: Path) -> None:
    """3 steps, a checkpoint on disk, a fresh process-like restore, 3 more: the straight adapter."""
    straight = _trainer()
    for _ in range(STEPS):
        straight.train_step()
    first = _trainer()
    for _ in range(3):
        first.train_step()
    assert first.progress.position.deferred  # the resumed position carries put-off examples
    adapter, opt, sched = first.checkpoint_parts()
    save_checkpoint(tmp_path, 3, adapter, opt, sched, capture_rng(), first.state())
    random.seed(123)
    torch.manual_seed(123)  # a fresh process's RNG: the checkpoint must put it back
    ck = load_checkpoint(latest_checkpoint(tmp_path))  # type: ignore[arg-type]
    resumed = _trainer()
    resumed.restore(ck.adapter, ck.optimizer, ck.scheduler, ck.state)
    restore_rng(ck.rng)
    for _ in range(3):
        resumed.train_step()
    a, b = adapter_state(straight.model), adapter_state(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.progress.losses == resumed.progress.losses
