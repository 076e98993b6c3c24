"""A leaner forward for peft's LoRA linear layers: the same numbers, fewer kernels and less Python.

Why: QLoRA training of a 1B model at 16 x 512 tokens a step is bound by the host dispatching
kernels, not by the GPU. peft's LoRA `Linear.forward` (plain and bitsandbytes 4-bit) per call:
checks and dicts for mixed-batch and variant features the SFT phase never uses, a loop over
active adapters, and in the 4-bit class a "defensive" `result.clone()` of the base output (a
full copy of a [tokens, out_features] tensor, in every forward and checkpoint recompute) before
an out-of-place add that makes the copy useless. It also multiplies the LoRA output by `scaling`
at full width [tokens, out_features].

The lean forward computes `base(x) + lora_B(lora_A(dropout(x)) * scaling)`: no clone, one
adapter, the scaling on the rank-r tensor [tokens, r] when it is a power of two — multiplying by
a power of two is exact in floating point, and a matmul of an input scaled by 2^k is the matmul
scaled by 2^k, so the result is bit-identical to peft's — and at full width otherwise, as peft
does. Dropout is peft's own module, called in the same order, so the RNG draws are peft's too.
Input casts follow peft's, which differ by class: the plain layer casts the input to the
adapter's dtype (float32) always, the 4-bit one only when CUDA autocast is off.

Anything else (adapters disabled or merged, several active adapters, a LoRA variant such as
DoRA, extra forward arguments) falls back to peft's forward.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch

__all__ = ["install_lean_lora", "lean_lora_forward"]


def _power_of_two(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def lean_lora_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """peft's LoRA Linear forward for one plain adapter, without its per-call overhead."""
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    if (args or kwargs or name is None or self.disable_adapters or self.merged
            or name not in self.lora_A or name in self.lora_variant):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    lora_a, lora_b = self.lora_A[name], self.lora_B[name]
    scaling = self.scaling[name]
    # peft's input cast, per class: the plain layer casts whenever enabled; the 4-bit one only
    # when CUDA autocast is off (no-argument `is_autocast_enabled`, as peft calls it).
    cast = getattr(self, "cast_input_dtype_enabled", True) and (
        self._lean_cast_always or not torch.is_autocast_enabled())
    if cast and x.dtype != lora_a.weight.dtype:
        x = x.to(lora_a.weight.dtype)
    h = lora_a(self.lora_dropout[name](x))
    if _power_of_two(scaling):
        delta = lora_b(h * scaling)
    else:
        delta = lora_b(h) * scaling
    return result + delta.to(result.dtype)


def install_lean_lora(model: Any) -> int:
    """Give every LoRA linear layer of `model` the lean forward; how many layers got it."""
    from peft.tuners.lora import Linear as LoraLinear  # noqa: PLC0415 - peft loads only for training

    lora_classes: tuple[type, ...] = (LoraLinear,)
    try:
        from peft.tuners.lora.bnb import Linear4bit  # noqa: PLC0415 - exists only with bitsandbytes
    except ImportError:
        pass
    else:
        lora_classes += (Linear4bit,)
    count = 0
    for module in model.modules():
        # Exact classes only: a subclass may change the computation this forward reproduces.
        if type(module) in lora_classes:
            module._lean_cast_always = type(module) is LoraLinear
            module.forward = types.MethodType(lean_lora_forward, module)
            count += 1
    return count
