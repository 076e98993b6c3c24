"""The buffers and step graphs of one fast-generation batch shape (used by `fastgen`).

A `Runner` owns, for one (batch, prompt width, max_new_tokens, sampler) shape: the static KV
cache (`static_kv`), the prompt-validity mask, the per-row sampling keys, the device buffer of
sampled tokens and its pinned host copy, the step counter and the seen-token ids of the
repetition penalty. `load` prefills and samples token 0; each later step (`_body`: embed the
previous token, run the model over the cache, sample on the device, advance) reads and writes
only these fixed-address buffers, so on CUDA it is captured once into a CUDA graph and then
replayed (`run_steps`). `rewind` makes an earlier step the next one, which only resets the
step counter and the seen ids. `fastgen` keeps the runner of the last shape for the next call.

`prebuild_kernels` runs a few steps of a Runner on a one-layer model of a model's shape on a
thread, so a fresh machine builds the Triton kernels while the real model loads (below).
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import structlog
import torch

from runner.llm.decoding import triton_attention, triton_parts, triton_sampling, triton_support
from runner.llm.decoding.sampling import Sampler, row_keys
from runner.llm.decoding.static_kv import (
    FAMILIES,
    StaticKV,
    decode_mask,
    model_step,
    prefill_mask,
    static_attention,
)

__all__ = ["Runner", "prebuild_kernels"]


class Runner:
    """Static buffers and step graphs for (batch, prompt width, max_new_tokens, sampler)."""

    def __init__(self, model: Any, batch: int, width: int, max_new: int, sampler: Sampler,
                 penalise: bool, graphs: bool) -> None:
        # A weak reference: a kept runner must not keep a model that was let go alive.
        self._model = weakref.ref(model)
        self.sampler, self.width, self.max_new = sampler, width, max_new
        self.graphs = graphs
        length = -(-(width + max_new) // 16) * 16  # SDPA pads masks to 16 otherwise
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        dev = self.device
        self.cache = StaticKV(model, batch, length)
        self.arange = torch.arange(length, device=dev)
        self.valid = torch.zeros(batch, length, dtype=torch.bool, device=dev)
        self.base = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.keys = torch.zeros(batch, 2, dtype=torch.long, device=dev)
        # Step-major, so the rows of a block are one contiguous slice to copy to the host.
        self.out = torch.zeros(max_new, batch, dtype=torch.long, device=dev)
        self.miss = torch.zeros(max_new, batch, dtype=torch.bool, device=dev)
        pin = dev.type == "cuda"
        self.host_out = torch.zeros(max_new, batch, dtype=torch.long, pin_memory=pin)
        self.host_miss = torch.zeros(max_new, batch, dtype=torch.bool, pin_memory=pin)
        self.copied = torch.cuda.Event() if pin else None
        self.step = torch.zeros(1, dtype=torch.long, device=dev)
        # Ids of the prompt and of the tokens sampled so far, for the repetition penalty; slots
        # not yet sampled repeat the prompt's last token, which is in the prompt anyway.
        self.seen = (torch.zeros(batch, width + max_new, dtype=torch.long, device=dev)
                     if penalise else None)
        self._modes: dict[str, tuple[torch.cuda.CUDAGraph, Any] | None] = {}

    @property
    def model(self) -> Any:
        model = self._model()
        if model is None:
            raise RuntimeError("the runner's model was released")
        return model

    def load(self, ids: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor) -> str:
        """Prefill the padded prompts and sample token 0 eagerly; return the variant to go on."""
        width = ids.shape[1]
        assert width == self.width, "prompts must be padded to the runner's width"
        self.valid.zero_()
        self.valid[:, :width] = mask.bool()
        self.base.copy_(mask.sum(dim=1, keepdim=True))
        self.keys.copy_(keys)
        self.step.zero_()
        if self.seen is not None:
            # Padding is on the left, so the last prompt token is real: padding and future
            # slots point at it, and only prompt tokens count, whatever the pad id.
            self.seen[:, :width] = torch.where(mask.bool(), ids, ids[:, -1:])
            self.seen[:, width:] = ids[:, -1:]
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        self.cache.slots = torch.arange(width, device=self.device)
        logits = model_step(self.model, self.cache, ids, prefill_mask(self.valid, width,
                                                                       self.dtype), positions)
        variant = self.sampler.first_variant()
        token, miss = self.sampler.pick(logits, self.seen, self.keys, self.step, variant)
        if variant == "topk" and bool(miss.any()):  # one host sync, at the prefill only
            variant = "sort"
            token, _ = self.sampler.pick(logits, self.seen, self.keys, self.step, variant)
        self._advance(token, miss)
        return variant

    def _advance(self, token: torch.Tensor, miss: torch.Tensor) -> None:
        self.out.index_copy_(0, self.step, token[None, :])
        self.miss.index_copy_(0, self.step, miss[None, :])
        if self.seen is not None:
            self.seen.index_copy_(1, self.step + self.width, token[:, None])
        self.step.add_(1)

    def _forward(self) -> torch.Tensor:
        # Step s >= 1: feed token s-1 at slot width+s-1; the logits for token s. Every tensor
        # read or written lives at a fixed address, so this is what a graph replays.
        prev = self.out.index_select(0, self.step - 1).T
        slot = self.step + (self.width - 1)
        self.cache.slots = slot
        mask = decode_mask(self.valid, self.width, slot, self.arange, self.dtype)
        return model_step(self.model, self.cache, prev, mask, self.base + (self.step - 1))

    def _sample(self, logits: torch.Tensor, variant: str) -> None:
        token, miss = self.sampler.pick(logits, self.seen, self.keys, self.step, variant)
        self._advance(token, miss)

    def _body(self, variant: str) -> None:
        self._sample(self._forward(), variant)

    def rewind(self, step: int) -> None:
        """Make `step` the next token to sample (the cache slots after it are simply rewritten)."""
        self.step.fill_(step)
        if self.seen is not None:
            self.seen[:, self.width + step :] = self.seen[:, self.width - 1 : self.width]

    def fetch(self, start: int, stop: int) -> None:
        """Start copying the tokens (and misses) of steps [start, stop) to the host."""
        self.host_out[start:stop].copy_(self.out[start:stop], non_blocking=True)
        self.host_miss[start:stop].copy_(self.miss[start:stop], non_blocking=True)
        if self.copied is not None:
            self.copied.record()

    def fetched(self, start: int, stop: int) -> tuple[list[list[int]], list[bool]]:
        """Wait for `fetch`: per row, the tokens of steps [start, stop); per step, any miss."""
        if self.copied is not None:
            self.copied.synchronize()
        return self.host_out[start:stop].T.tolist(), self.host_miss[start:stop].any(1).tolist()

    def run_steps(self, variant: str, n: int, log: Any) -> None:
        """n decode steps: graph replays on CUDA (captured on first use), else eager."""
        mode = self._mode(variant, log) if self.graphs else None
        for _ in range(n):
            if mode is None:
                self._body(variant)
            elif mode[1] is None:
                mode[0].replay()
            else:  # the model's part is a graph, the sampling runs eagerly after it
                mode[0].replay()
                self._sample(mode[1], variant)

    def _mode(self, variant: str, log: Any) -> tuple[torch.cuda.CUDAGraph, Any] | None:
        # The whole step as one graph; if some sampling op cannot be captured (CUB's
        # segmented sorts are not capturable for every shape), the model's part alone as a
        # graph (its logits a fixed buffer) and the sampling eagerly; else all eagerly.
        if variant not in self._modes:
            graph, _ = self._capture(lambda: self._body(variant), variant, log)
            if graph is not None:
                self._modes[variant] = (graph, None)
            else:
                if "forward" not in self._modes:
                    fwd, logits = self._capture(self._forward, "forward", log)
                    self._modes["forward"] = None if fwd is None else (fwd, logits)
                self._modes[variant] = self._modes["forward"]
        return self._modes[variant]

    def _capture(self, fn: Callable[[], Any], what: str, log: Any
                 ) -> tuple[torch.cuda.CUDAGraph | None, Any]:
        """(graph of `fn`, its output), or (None, None) when `fn` cannot be captured."""
        started = time.perf_counter()
        at = int(self.step.item())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        graph: torch.cuda.CUDAGraph | None = None
        try:
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up: lazy inits and library handles outside capture
                    fn()
                    self.rewind(at)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                out = fn()
        except RuntimeError as exc:  # an op that cannot be captured
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            torch.cuda.synchronize()
            log.warning("cuda_graph_unavailable", what=what, error=str(exc)[:300])
            graph, out = None, None
        self.rewind(at)  # capture does not run the step, but the warm-ups did
        if graph is not None:
            log.info("fastgen_captured", variant=what, batch=self.out.shape[1],
                     seconds=round(time.perf_counter() - started, 3))
        return graph, out


# Kernel prebuild. A fresh process on a machine with an empty Triton cache spends ~5 s of its
# first `generate` call building kernels one after another (bench/first_call.py on the H200:
# 6.4 s cold, 1.3 s with the kernels on disk). They depend on the model's shape (hidden and
# head sizes, vocabulary, dtype), not on its weights, so `prebuild_kernels` builds them on a
# thread while the weights load: a few eager steps of a `Runner` over a one-layer model of the
# same shape (random weights), through `static_attention`, `triton_parts` and the fused nucleus
# draw, so each kernel is built with the specialisations the real calls use. Its batch is
# large enough for the decode-attention kernel to run too, but that kernel's cache length is a
# compile-time constant, so the real call still builds its own length. The thread has its own
# stream, keeps nothing, takes no runner from `fastgen`'s cache, and only logs a failure (the
# real call then builds, or switches off, the kernels as before). It is not a daemon: a
# process that ends first waits for it instead of tearing CUDA down under it.
_log = structlog.get_logger("runner.llm")
_STARTED: set[tuple[Any, ...]] = set()


def prebuild_kernels(config: Any, dtype: torch.dtype, device: torch.device
                     ) -> threading.Thread | None:
    """Begin building the kernels a model of `config` will use on `device` (once per shape);
    None where no kernel would be used (CPU, float32, another family, no Triton).

    Not called by the phases: the build thread instantiates a model of the same family, which
    touches process-wide state (transformers' default dtype while it builds a model, the
    family module's rotary function while Triton parts are switched on), so a model loading
    on the main thread at the same time could be built or run with the thread's settings
    (seen on the H200: a bf16/float32 mismatch in the loader's sentinel generate). Only
    `bench/first_call.py --variant thread` uses it, alone in its process; the phases use
    `kernel_prebuild`'s helper process instead.
    """
    if (device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16)
            or getattr(config, "model_type", None) not in FAMILIES
            or not triton_support.available(device)):
        return None
    key = (config.model_type, config.hidden_size, config.num_attention_heads,
           config.num_key_value_heads, config.intermediate_size, config.vocab_size, dtype, device)
    if key in _STARTED:
        return None
    _STARTED.add(key)
    # Not a daemon (seen: a daemon still building when the interpreter exited aborted it).
    thread = threading.Thread(target=_build, args=(config, dtype, device), daemon=False,
                              name="runner-kernel-prebuild")
    thread.start()
    return thread


def _build(config: Any, dtype: torch.dtype, device: torch.device) -> None:
    started = time.perf_counter()
    try:
        # Its own stream: nothing it queues meets a graph the caller captures meanwhile.
        with torch.cuda.device(device), torch.cuda.stream(torch.cuda.Stream(device)), \
                torch.inference_mode():
            model = _one_layer(config, dtype, device)
            batch = -(-triton_attention.MIN_PROGRAMS // config.num_key_value_heads)
            fused = triton_sampling.available(device)
            sampler = Sampler(0.7, 0.9, 1.1, 1024, "bisect", fused)
            runner = Runner(model, batch, 64, 4, sampler, True, graphs=False)
            ids = torch.randint(3, config.vocab_size, (batch, 64), device=device)
            mask = torch.ones_like(ids)
            keys = row_keys(list(range(batch)), device)
            parts = triton_parts.usable(model, device, dtype)
            with static_attention(model), (triton_parts.switched_on(model) if parts
                                           else contextlib.nullcontext()):
                variant = runner.load(ids, mask, keys)
                runner.run_steps(variant, 2, _log)
                # The refill engine draws with one step per row (another specialisation).
                if fused:
                    logits = torch.randn(batch, config.vocab_size, device=device)
                    triton_sampling.nucleus_draw(logits, keys, torch.arange(batch, device=device),
                                                 0.7, 0.9)
            torch.cuda.synchronize(device)
        _log.info("kernels_prebuilt", seconds=round(time.perf_counter() - started, 2))
    except Exception as exc:  # the real call builds them, or switches them off, as before
        _log.warning("kernel_prebuild_failed", error=f"{type(exc).__name__}: {exc}"[:300])


def _one_layer(config: Any, dtype: torch.dtype, device: torch.device) -> Any:
    """A model of `config`'s family and shape with one layer (random weights)."""
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - only where kernels are built

    fields = {**config.to_dict(), "num_hidden_layers": 1}
    if fields.get("layer_types"):
        fields["layer_types"] = fields["layer_types"][:1]
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config.__class__.from_dict(fields))
    return model.to(dtype).eval()
