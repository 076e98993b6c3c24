"""The fast generation loop: static KV cache, prefill once, each decode step one CUDA graph.

Where the time goes in the simple loop: every decode step dispatches a few hundred kernels
from Python (~70 ms a step on the H100 whatever the batch, see shared/device/MEASURED.md)
while the GPU needs about a millisecond. Here a step is: embed the previous token, run the
model over the static cache (`static_kv`), sample on the device (`sampling`), write the token
into an output buffer and advance a device step counter. All of it reads and writes buffers
of fixed address, so on CUDA it is captured once into a `torch.cuda.CUDAGraph` and replayed:
one launch a step and no host synchronisation.

The host looks at the tokens only every `block` steps (one device-to-host copy): it finds
EOS and stop strings there (rows that have stopped keep decoding into the discarded part of
the buffer, which is simpler than retiring rows and costs nothing when rows finish together)
and ends the batch early once every row has stopped. A `topk`-variant miss (a row whose
nucleus may reach past the K candidates, see `sampling`; only with `nucleus="topk"`, the
default on CPU; `bisect`, the default on CUDA, is exact and never misses) found in a block
rewinds the device to that step, which only resets the step counter and the seen-token ids,
and the batch goes on with the `sort` variant: the result is exactly that of always sorting
(the host's side of the stops is `basics.RowStops`).

On CPU the same code runs the steps eagerly (no graphs): that is what the tests check
against `model.generate`. The runner (`step_runner.Runner`: cache, buffers, graphs) is kept
for the next call of the same shape, since capturing costs about as much as a dozen eager
steps. bf16/fp16 models of known families run the decoder's norms, rotary embedding and MLPs as
Triton kernels (`triton_parts`). Other models, once a process has generated
`COMPILE_AFTER_TOKENS` tokens on CUDA, get new runners that capture the step with those pieces
compiled (`compiled_parts`); `RUNNER_DECODE_COMPILE=always|never` overrides.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import structlog
import torch

from runner.llm.decoding import compiled_parts, triton_parts, triton_sampling, triton_support
from runner.llm.decoding.basics import Generation, RowStops, SamplingParams, eos_ids, on_device
from runner.llm.decoding.sampling import Sampler, row_keys
from runner.llm.decoding.static_kv import static_attention
from runner.llm.decoding.step_runner import Runner
from runner.llm.loading.loader import LoadedModel
from runner.store.batches import row_seed

__all__ = ["COMPILE_AFTER_TOKENS", "COMPILE_ENV", "Runner", "clear_runners", "compile_failed",
           "count_generated", "generate_static", "kept_runner", "parts_switched_on",
           "wants_compiled"]

_log = structlog.get_logger("runner.llm")
# Nucleus search when the caller names none: None picks "bisect" where its Triton kernel runs
# (CUDA; one kernel a step, and its cost does not depend on the nucleus's size), else "topk"
# (top-1024 candidates, a full sort only for a row whose nucleus is larger: rare for a trained
# model, and cheaper than 30 eager masked sums on CPU). "bisect-eager" is the torch search.
NUCLEUS: str | None = None
_PAD_TO = 64  # prompt widths are rounded up to a multiple of this
# Compiled norms, rotary and MLPs (`compiled_parts`) in the step graphs: "auto" compiles on CUDA
# once this process generated COMPILE_AFTER_TOKENS tokens eagerly with the model, and only for
# models the Triton parts do not cover (`wants_compiled`).
COMPILE_ENV = "RUNNER_DECODE_COMPILE"
COMPILE_AFTER_TOKENS = 1_000_000  # ~35 s of compiling ~ 1M eager tokens at batch 256
_GENERATED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_COMPILE_FAILED: weakref.WeakSet[Any] = weakref.WeakSet()
_RUNNERS: dict[tuple[Any, ...], Any] = {}  # a Runner, or refill's SlotRunner
_WATCHED: weakref.WeakSet[Any] = weakref.WeakSet()


def clear_runners() -> None:
    """Drop the kept runner (its cache and graphs), e.g. before the memory is needed."""
    if _RUNNERS and torch.cuda.is_available():
        # A call may return with a discarded block still replaying: let it finish before its
        # graphs and their memory pools are freed.
        torch.cuda.synchronize()
    _RUNNERS.clear()


def _runner(lm: LoadedModel, batch: int, width: int, p: SamplingParams, graphs: bool,
            candidates: int, nucleus: str | None = None, compiled: bool = False) -> Runner:
    # The prompt width is the batch's longest prompt rounded up to _PAD_TO: batches of a phase
    # mostly share one runner (one capture), and a batch's padding, hence its numerics,
    # depends on the batch alone, not on which batch ran before.
    if nucleus is None:
        nucleus = "bisect" if triton_sampling.available(lm.device) else "topk"
    if nucleus not in ("bisect", "bisect-eager", "topk"):
        raise ValueError(f"unknown nucleus search {nucleus!r}")
    fused = nucleus == "bisect" and triton_sampling.available(lm.device)
    sampler = Sampler(p.temperature, p.top_p, p.repetition_penalty, candidates,
                      "topk" if nucleus == "topk" else "bisect", fused)
    penalise = p.repetition_penalty != 1.0
    width = -(-width // _PAD_TO) * _PAD_TO
    # The graphs hold the parts they were captured with: compiled, Triton or the model's own.
    key = (weakref.ref(lm.model), batch, width, p.max_new_tokens, sampler, penalise, graphs,
           compiled, triton_parts.ENABLED)
    return kept_runner(key, lm.model, lambda: Runner(lm.model, batch, width, p.max_new_tokens,
                                                      sampler, penalise, graphs))


@torch.inference_mode()
def generate_static(
    lm: LoadedModel,
    rows: list[list[int]],
    places: list[int],
    p: SamplingParams,
    seed: int,
    *,
    graphs: bool | None = None,
    block: int = 16,
    candidates: int = 1024,
    nucleus: str | None = None,
    log: Any = None,
) -> list[Generation]:
    """Continue `rows` (row i sampling with key row_seed(seed, places[i])); same contract as
    the simple loop. `graphs` defaults to CUDA graphs on CUDA and eager steps elsewhere.
    `nucleus` (default `NUCLEUS`, see there): "bisect" (exact threshold search, one Triton
    kernel on CUDA), "bisect-eager", or "topk" (K = `candidates`, a miss rewinds to a sort)."""
    log = log or _log
    graphs = lm.device.type == "cuda" if graphs is None else graphs
    compiled = wants_compiled(lm, graphs)
    while True:
        kernels = triton_support.available(lm.device)
        try:
            # Graphs are captured, and Triton launches, on the current device: the model's.
            with on_device(lm.device):
                out = _generate(lm, rows, places, p, seed, graphs, block, candidates, nucleus,
                                log, compiled)
            break
        except Exception as exc:
            if isinstance(exc, torch.cuda.OutOfMemoryError) or not (compiled or kernels):
                raise
            # No working compiler here, or Triton cannot build its kernels (no C compiler,
            # an unsupported card): the same rows again without them. The rows depend only
            # on the seeds, so the retry gives what a first call without them would.
            clear_runners()
            if compiled:
                compile_failed(lm, exc, log)
                compiled = False
            else:
                triton_support.switch_off(exc, log)
    if not compiled:
        count_generated(lm, sum(g.tokens for g in out))
    return out


def parts_switched_on(lm: LoadedModel, compiled: bool) -> AbstractContextManager[Any]:
    """The decoder pieces the step graphs are captured with: compiled, Triton or the model's."""
    if compiled:
        return compiled_parts.switched_on(lm.model)
    if triton_parts.usable(lm.model, lm.device, lm.dtype):
        return triton_parts.switched_on(lm.model)
    return nullcontext()


def wants_compiled(lm: LoadedModel, graphs: bool) -> bool:
    """Whether new step graphs should hold the compiled pieces (see COMPILE_AFTER_TOKENS).

    `auto` compiles only where the Triton parts do not apply: against them the compiled parts
    gained 1.6% (42,586 against 41,919 tok/s at batch 256 on the H200, bench/HISTORY.md) for
    about 30 s of compiling, which a run pays back only after ~30 minutes of decoding; against
    the eager parts (float32 models, other families) they gain about a third.
    """
    if not graphs or lm.model in _COMPILE_FAILED:
        return False
    if compiled_parts.mode(COMPILE_ENV) == "auto" and triton_parts.usable(lm.model, lm.device,
                                                                          lm.dtype):
        return False
    return compiled_parts.wanted(COMPILE_ENV, lm.device, _GENERATED.get(lm.model, 0),
                                 COMPILE_AFTER_TOKENS)


def count_generated(lm: LoadedModel, tokens: int) -> None:
    """Add eagerly generated tokens to the model's count (what `wants_compiled` reads)."""
    _GENERATED[lm.model] = _GENERATED.get(lm.model, 0) + tokens


def compile_failed(lm: LoadedModel, exc: BaseException, log: Any) -> None:
    """Never compile for this model again in this process."""
    log.warning("decode_compile_failed", error=str(exc)[:300])
    _COMPILE_FAILED.add(lm.model)


def kept_runner(key: tuple[Any, ...], model: Any, make: Callable[[], Any]) -> Any:
    """The runner kept under `key`, or a new one from `make()` after dropping the kept one
    (one runner at a time: its cache is the largest thing we hold)."""
    runner = _RUNNERS.get(key)
    if runner is None:
        clear_runners()
        if model not in _WATCHED:  # free the cache and graphs with the model
            _WATCHED.add(model)
            weakref.finalize(model, clear_runners)
        runner = _RUNNERS[key] = make()
    return runner


def _generate(lm: LoadedModel, rows: list[list[int]], places: list[int], p: SamplingParams,
              seed: int, graphs: bool, block: int, candidates: int, nucleus: str | None,
              log: Any, compiled: bool) -> list[Generation]:
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    runner = _runner(lm, len(rows), max(len(r) for r in rows), p, graphs, candidates,
                     nucleus or NUCLEUS, compiled)
    width = runner.width
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=lm.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=lm.device)
    keys = row_keys([row_seed(seed, i) for i in places], lm.device)
    host = RowStops(lm.tokenizer, eos_ids(lm), len(rows), p.stop_strings)
    with static_attention(lm.model), parts_switched_on(lm, compiled):
        variant = runner.load(ids, mask, keys)
        return _decode(runner, host, variant, p.max_new_tokens, block, log)


def _decode(runner: Runner, host: RowStops, variant: str, total: int, block: int,
            log: Any) -> list[Generation]:
    # Steps [0, done) are with the host, [done, computed) are queued on the device. Each
    # round queues the copy of the queued block, then the next block, then reads the copy:
    # the host's EOS and stop-string work overlaps the GPU's next block.
    done, computed = 0, 1
    while True:
        n = min(block, total - computed)
        runner.fetch(done, computed)
        runner.run_steps(variant, n, log)
        tokens, missed = runner.fetched(done, computed)
        if variant == "topk" and any(missed):
            first = done + missed.index(True)
            tokens = [t[: first - done] for t in tokens]
            runner.rewind(first)  # the block just queued is redone with the sort variant
            log.info("fastgen_rewind", step=first, rows=len(tokens))
            done = computed = first
            variant = "sort"
        else:
            done, computed = computed, computed + n
        host.take(tokens)
        if host.done() or done >= total:
            return host.results()
