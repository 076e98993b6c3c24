"""The elementwise pieces of a decoder, `torch.compile`d and switched on only inside our calls.

Why: at batch 256 a decode step of a 1B Llama spends ~1.5 ms of its ~8.5 ms in small
memory-bound kernels (bench/RESULTS.md, profile): each RMSNorm is six kernels in float32, the
rotary embedding about a dozen (slices, `cat`, products, sums) for q and k, the MLP's SiLU and
product two more, in every layer. Compiled, each of those pieces is one or two fused kernels.

What is compiled, and why not the whole layer: the layer's attention writes our static KV
cache at `layer_idx`, an integer torch.compile would specialise on, so a whole-layer compile
recompiles for every layer. The pieces here hold no cache and no layer index: every module of
a class named `*RMSNorm`, `*RotaryEmbedding` and each layer's `mlp`, and the family's
module-level `apply_rotary_pos_emb` (transformers' Llama, Mistral and Qwen files each define
one). Shapes are dynamic, so one compilation serves every batch and prompt width.

`switched_on(model)` installs the compiled forms for the length of a `with` block (a module's
`_compiled_call_impl`, which `nn.Module.compile()` would set for good; the family module's
function) and restores what was there, so callers outside the block (SFT, evaluation, the
critic's own compiled layers) see the model unchanged.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from runner.environment import COMPILE_MODES

__all__ = ["compiled_calls", "family_module", "installed", "mode", "switched_on", "wanted"]

_ROTARY_FN = "apply_rotary_pos_emb"
_PARTS: weakref.WeakKeyDictionary[Any, tuple[list[tuple[Any, Any]], Any]] = (
    weakref.WeakKeyDictionary())
_FUNCTIONS: dict[Any, Any] = {}


def mode(env: str) -> str:
    """`$env` as one of COMPILE_MODES (unset or empty: auto)."""
    value = (os.environ.get(env) or "auto").strip().lower()
    if value not in COMPILE_MODES:
        raise ValueError(f"{env}={value!r}: use auto, always or never")
    return value


def wanted(env: str, device: torch.device, done: int, after: int) -> bool:
    """Whether to run compiled: `$env` is always, never or auto (the default); auto compiles on
    CUDA once `done` units of work ran eagerly reach `after` (eager time about equal to the
    compile time: never much more than twice what hindsight would have chosen)."""
    chosen = mode(env)
    if chosen != "auto":
        return chosen == "always"
    return device.type == "cuda" and done >= after


def _modules(model: Any) -> list[Any]:
    named = ("RMSNorm", "RotaryEmbedding")
    found = [m for m in model.modules() if type(m).__name__.endswith(named)]
    layers = getattr(model.get_decoder(), "layers", [])
    return found + [layer.mlp for layer in layers if hasattr(layer, "mlp")]


def family_module(model: Any) -> Any:
    """The transformers module that defines `model`'s attention and `apply_rotary_pos_emb`."""
    layers = getattr(model.get_decoder(), "layers", [])
    attn = getattr(layers[0], "self_attn", None) if len(layers) else None
    module = sys.modules.get(type(attn).__module__) if attn is not None else None
    return module if callable(getattr(module, _ROTARY_FN, None)) else None


def compiled_calls(modules: list[Any]) -> list[tuple[Any, Any]]:
    """(module, its call compiled with dynamic shapes): what `nn.Module.compile()` makes,
    kept aside instead of installed for good."""
    return [(m, torch.compile(m._call_impl, dynamic=True)) for m in modules]


@contextmanager
def installed(pairs: list[tuple[Any, Any]]) -> Iterator[None]:
    """Each module runs its compiled call inside the block (`Module.__call__` uses
    `_compiled_call_impl` when set); whatever was there before is put back after."""
    before = [m._compiled_call_impl for m, _ in pairs]
    for module, fn in pairs:
        module._compiled_call_impl = fn
    try:
        yield
    finally:
        for (module, _), fn in zip(pairs, before):
            module._compiled_call_impl = fn


def _parts(model: Any) -> tuple[list[tuple[Any, Any]], Any]:
    """(module, compiled call) pairs and the family module, made once per model."""
    if model not in _PARTS:
        pairs = compiled_calls(_modules(model))
        family = family_module(model)
        if family is not None and family not in _FUNCTIONS:
            _FUNCTIONS[family] = (getattr(family, _ROTARY_FN),
                                  torch.compile(getattr(family, _ROTARY_FN), dynamic=True))
        _PARTS[model] = (pairs, family)
    return _PARTS[model]


@contextmanager
def switched_on(model: Any) -> Iterator[None]:
    """Run `model`'s norms, rotary embedding and MLPs compiled inside the block."""
    pairs, family = _parts(model)
    if family is not None:
        setattr(family, _ROTARY_FN, _FUNCTIONS[family][1])
    try:
        with installed(pairs):
            yield
    finally:
        if family is not None:
            setattr(family, _ROTARY_FN, _FUNCTIONS[family][0])
