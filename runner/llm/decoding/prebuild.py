"""Build the decoder's Triton kernels in the background while the model loads.

Why: a fresh process on a machine with an empty kernel cache spent ~6 s of its first
`generate` call building Triton kernels one after another (bench/first_call.py: 7.7 s cold,
1.5 s with the kernels on disk). The kernels depend on the model's shape (hidden size, head
size, vocabulary, dtype), not on its weights, so they can be built before the weights arrive.

`start(config, dtype, device)` runs, on a thread, a few eager decode steps of a
one-layer model of the same shape (its weights left uninitialised) through the same code the
real calls run (`step_runner.Runner`, `static_attention`, `triton_parts`, the fused nucleus
draw), its weights random: every kernel is built with the specialisations the real calls use, into Triton's
in-process and on-disk caches. The batch is large enough (`triton_attention.MIN_PROGRAMS`)
for the decode-attention kernel to run too, but its cache length is a compile-time constant,
so the real call's own length is still built on first use. The thread keeps nothing, takes no runner from `fastgen`'s cache, and a failure
there only logs: the real call then builds (or switches off) the kernels as it always did.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import structlog
import torch

from runner.llm.decoding import triton_attention, triton_parts, triton_sampling, triton_support
from runner.llm.decoding.sampling import Sampler, row_keys
from runner.llm.decoding.static_kv import FAMILIES, static_attention
from runner.llm.decoding.step_runner import Runner

__all__ = ["start"]

_log = structlog.get_logger("runner.llm")
_STARTED: set[tuple[Any, ...]] = set()


def start(config: Any, dtype: torch.dtype, device: torch.device) -> threading.Thread | None:
    """Begin building the kernels a model of `config` will use on `device` (once per shape);
    None where no kernel would be used (CPU, float32, another family, no Triton)."""
    if (device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16)
            or getattr(config, "model_type", None) not in FAMILIES
            or not triton_support.available(device)):
        return None
    key = (config.model_type, config.hidden_size, config.num_attention_heads,
           config.num_key_value_heads, config.intermediate_size, config.vocab_size, dtype, device)
    if key in _STARTED:
        return None
    _STARTED.add(key)
    # Not a daemon: a process that ends before the build does waits for it, instead of
    # tearing the interpreter down under a thread inside CUDA (seen: abort at exit).
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
