"""The SFT training loop: optimizer steps over the data stream, and its resumable state.

Kept apart from the phase (`sft.py`) so the benchmark runs exactly this loop without a run
folder. One `train_step` is one optimizer step over `grad_accum` micro-batches; the loss is
the sum over all their response tokens divided by that total count, so accumulating k
micro-batches equals one batch k times as large. Everything a step depends on — adapter,
optimizer, scheduler, RNG states, data position — is in `state_dict`, which is what makes
resume bit-exact on CPU.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from runner.llm.sft.data import DataPosition, DataStream
from runner.llm.sft.loss import sft_loss_sum
from runner.llm.sft.model import adapter_state, load_adapter_state, trainable_parameters
from runner.llm.sft.options import SCHEDULES

__all__ = ["SCHEDULES", "SftTrainer", "StepStats", "TrainConfig"]



@dataclass(frozen=True)
class TrainConfig:
    """The optimisation settings of one SFT run."""

    learning_rate: float = 2e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    total_steps: int = 1
    total_micro_batches: int | None = None  # epochs mode: stop the data there; steps mode: None
    grad_accum: int = 1
    loss_chunk: int = 1024
    tiled_loss: bool = False  # the loss through `tiled_loss` (far less memory than a chunk)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0


@dataclass
class StepStats:
    """What one optimizer step did."""

    step: int
    loss: float
    lr: float
    real_tokens: int
    label_tokens: int
    seconds: float


@dataclass
class _Progress:
    step: int = 0
    micro_done: int = 0
    position: DataPosition = field(default_factory=DataPosition)
    losses: list[float] = field(default_factory=list)
    train_tokens: int = 0
    train_seconds: float = 0.0


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> Any:
    from transformers import (  # noqa: PLC0415 - transformers loads in seconds; only training needs it
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.total_steps)
    if cfg.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.total_steps)
    if cfg.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")


class SftTrainer:
    """LoRA training of `model` on `stream` with AdamW and a warm-up schedule."""

    def __init__(self, model: Any, stream: DataStream, cfg: TrainConfig,
                 device: torch.device) -> None:
        self.model, self.stream, self.cfg, self.device = model, stream, cfg, device
        self.params = trainable_parameters(model)
        # torch's default update path: per tensor on CPU, multi-tensor on CUDA; both are
        # deterministic for a given device, which is all bit-exact resume needs.
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = _scheduler(self.optimizer, cfg)
        self.progress = _Progress()
        # bf16 autocast on CUDA (the QLoRA compute dtype); plain float32 on CPU.
        self._autocast: Any = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if device.type == "cuda" else contextlib.nullcontext
        )

    @property
    def step(self) -> int:
        return self.progress.step

    @property
    def done(self) -> bool:
        return self.progress.step >= self.cfg.total_steps

    def _micro_batches(self) -> list[Any]:
        batches = []
        for _ in range(self.cfg.grad_accum):
            limit = self.cfg.total_micro_batches
            if limit is not None and self.progress.micro_done >= limit:
                break
            batch, self.progress.position = self.stream.next(self.progress.position)
            self.progress.micro_done += 1
            batches.append(batch)
        return batches

    def train_step(self) -> StepStats:
        """One optimizer step (grad_accum micro-batches); its mean response-token loss."""
        start = time.perf_counter()
        batches = self._micro_batches()
        labelled = sum(b.label_tokens for b in batches)
        real = sum(b.real_tokens for b in batches)
        lr = self.scheduler.get_last_lr()[0]
        total = torch.zeros((), device=self.device)
        for batch in batches:
            with self._autocast():
                loss_sum, _ = sft_loss_sum(self.model, batch.to(self.device), self.cfg.loss_chunk,
                                           self.cfg.tiled_loss)
            (loss_sum / max(labelled, 1)).backward()
            total += loss_sum.detach().float()
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss = float(total) / max(labelled, 1)  # the step's one host synchronisation
        seconds = time.perf_counter() - start
        p = self.progress
        p.step += 1
        p.losses.append(loss)
        p.train_tokens += real
        p.train_seconds += seconds
        return StepStats(p.step, loss, lr, real, labelled, seconds)

    def state(self) -> dict[str, Any]:
        """The JSON part of a checkpoint (the tensors go through `checkpoint_tensors`)."""
        p = self.progress
        return {"step": p.step, "micro_done": p.micro_done, "position": p.position.as_dict(),
                "losses": list(p.losses), "train_tokens": p.train_tokens,
                "train_seconds": p.train_seconds, "total_steps": self.cfg.total_steps}

    def checkpoint_parts(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        """(adapter tensors, optimizer state, scheduler state) to save."""
        return adapter_state(self.model), self.optimizer.state_dict(), self.scheduler.state_dict()

    def restore(self, adapter: dict[str, torch.Tensor], optimizer: dict[str, Any],
                scheduler: dict[str, Any], state: dict[str, Any]) -> None:
        """Continue from a checkpoint (the caller restores the RNG states last)."""
        if state["total_steps"] != self.cfg.total_steps:
            raise ValueError(f"checkpoint is of a {state['total_steps']}-step run, "
                             f"this one has {self.cfg.total_steps} steps")
        load_adapter_state(self.model, {k: v.to(self.device) for k, v in adapter.items()})
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)
        self.progress = _Progress(
            step=int(state["step"]), micro_done=int(state["micro_done"]),
            position=DataPosition.from_dict(state["position"]),
            losses=[float(x) for x in state["losses"]], train_tokens=int(state["train_tokens"]),
            train_seconds=float(state["train_seconds"]),
        )

    def tokens_per_s(self) -> float:
        """Real (non-pad) tokens per second of training, over every step so far."""
        p = self.progress
        return p.train_tokens / p.train_seconds if p.train_seconds > 0 else 0.0
