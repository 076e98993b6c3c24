"""Run one phase instance: a Python callable or a shell command, with the spec's retries.

Retries use tenacity with explicit stop (the spec's `attempts`), exponential wait and a narrow
predicate: only exceptions whose class (or a base class) is named in `retry.on` are retried.
Batches committed by an earlier attempt stay committed, so a retry goes on where it failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from runner.errors import PhaseError, RunnerError
from runner.phases.context import PhaseContext
from runner.phases.registry import UsesError, phase_options, resolve_uses
from runner.phases.shell import check_metrics, run_shell_phase

__all__ = ["PhaseJob", "PhaseOutcome", "describe_error", "execute_phase"]


@dataclass(frozen=True)
class PhaseOutcome:
    """What a finished phase instance reports to the engine."""

    metrics: dict[str, float]
    used_cuda: bool
    wall_s: float


@dataclass
class PhaseJob:
    """Everything needed to run one phase instance, resolved by the engine."""

    name: str
    uses: str | None
    run: str | None
    env: dict[str, str]
    retry_attempts: int
    retry_on: tuple[str, ...]
    backoff_s: float
    max_backoff_s: float
    ctx: PhaseContext
    children: Any = None  # the run lock, which records shell phases' process groups
    sharding: dict[str, Any] | None = None  # the spec's `shards:`, for a sharded phase


def _named_in(exc: BaseException, names: tuple[str, ...]) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _run_python(job: PhaseJob) -> dict[str, float]:
    if job.sharding is not None:
        from runner.phases.shards import execute_shards, shard_job  # noqa: PLC0415 - sharded phases only

        work = shard_job(job.ctx, job.uses or "", int(job.sharding["count"]))
        metrics, used_cuda = execute_shards(work, job.sharding, job.ctx.log)
        job.ctx.used_cuda = job.ctx.used_cuda or used_cuda
        return metrics
    try:
        fn = resolve_uses(job.uses or "", job.ctx.spec_dir)
        job.ctx.options = phase_options(job.uses or "", job.ctx.spec_dir, job.ctx.params, job.name)
    except UsesError as exc:
        raise PhaseError(job.name, str(exc)) from None
    job.ctx.begin_attempt()  # a retry counts batches from 0 again and skips the committed ones
    metrics = fn(job.ctx)
    job.ctx.finish_records()
    return check_metrics(metrics, job.name, f"return value of {job.uses}")


def _run_shell(job: PhaseJob) -> dict[str, float]:
    ctx = job.ctx
    env = {
        "RUNNER_RUN_ID": ctx.run_id,
        "RUNNER_PHASE": ctx.phase,
        "RUNNER_ITERATION": str(ctx.iteration),
        "RUNNER_SEED": str(ctx.seed),
        "RUNNER_OUTPUT_DIR": str(ctx.output_dir),
        **job.env,
    }
    return run_shell_phase(
        job.run or "", cwd=ctx.spec_dir, output_dir=ctx.output_dir, env=env,
        phase=job.name, children=job.children,
    )


def execute_phase(job: PhaseJob, on_retry: Callable[[int, BaseException, float], None]) -> PhaseOutcome:
    """Run the job, retrying as the spec says; raise the last error when attempts run out."""
    body = _run_python if job.uses else _run_shell

    def log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        if exc is not None:
            on_retry(state.attempt_number, exc, wait)

    retrying = Retrying(
        stop=stop_after_attempt(job.retry_attempts),
        wait=wait_exponential(multiplier=job.backoff_s, max=job.max_backoff_s),
        retry=retry_if_exception(lambda e: _named_in(e, job.retry_on) and not isinstance(e, KeyboardInterrupt)),
        before_sleep=log_retry,
        reraise=True,
    )
    start = time.monotonic()
    metrics = retrying(body, job)
    return PhaseOutcome(metrics=metrics, used_cuda=job.ctx.used_cuda, wall_s=time.monotonic() - start)


def describe_error(exc: BaseException) -> str:
    """One line for the journal and `status`: the type and message, no traceback."""
    if isinstance(exc, RunnerError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"

