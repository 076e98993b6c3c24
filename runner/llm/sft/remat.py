"""Recompute the decoder layers' cheap elementwise parts in backward instead of keeping them.

Why: inside a layer's backward (where a checkpointed step peaks), autograd keeps what each
elementwise op needs: an RMSNorm keeps a float32 copy of its input, the squared mean, the
normalised float32 tensor and its cast (three to four [tokens, hidden] tensors, two of them
float32); the MLP keeps the gate output, its activation and the up output, each [tokens,
intermediate] (the largest tensors of the layer). Wrapping each norm and the MLP's
`act(gate) * up` in a non-reentrant checkpoint keeps only their inputs and recomputes the rest
(a few elementwise kernels) when backward reaches them. The recomputation runs the same ops on
the same values, so losses and gradients are bit-identical; nothing random happens inside, so
no RNG state is saved.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["compile_parts", "install_remat"]

# MLPs known to compute `down_proj(act_fn(gate_proj(x)) * up_proj(x))`.
GATED_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "GemmaMLP",
                        "Gemma2MLP", "Olmo2MLP", "SmolLM3MLP"})


def _recomputed(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(*args: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            out: torch.Tensor = checkpoint(fn, *args, use_reentrant=False, preserve_rng_state=False)
            return out
        return fn(*args)

    return forward


def _gated_mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return self.down_proj(self._act_mul(self.gate_proj(x), self.up_proj(x)))


def _gated(mlp: Any) -> bool:
    return mlp is not None and type(mlp).__name__ in GATED_MLPS


def compile_parts(decoder: Any) -> int:
    """torch.compile the norms and the gated MLPs' `act(gate) * up` of `decoder.layers` (pure
    torch code, unlike the 4-bit matmuls and peft around them); how many modules changed.

    The fallback when whole compiled layers do not work: each norm becomes one or two fused
    kernels instead of about eight ops, in forward, recompute and backward alike.
    """
    count = 0
    for layer in getattr(decoder, "layers", []):
        for name in ("input_layernorm", "post_attention_layernorm"):
            norm = getattr(layer, name, None)
            if norm is not None:
                norm.compile()
                count += 1
        mlp: Any = getattr(layer, "mlp", None)
        if _gated(mlp):
            if not hasattr(mlp, "_act_mul"):
                act = mlp.act_fn
                mlp._act_mul = lambda gate, up, act=act: act(gate) * up
                mlp.forward = types.MethodType(_gated_mlp_forward, mlp)
            mlp._act_mul = torch.compile(mlp._act_mul)
            count += 1
    return count


def install_remat(decoder: Any) -> int:
    """Wrap the norms and gated-MLP activations of `decoder.layers`, and the decoder's final
    norm; how many modules changed."""
    count = 0
    for layer in getattr(decoder, "layers", []):
        for name in ("input_layernorm", "post_attention_layernorm"):
            norm = getattr(layer, name, None)
            if norm is not None:
                norm.forward = _recomputed(norm.forward)
                count += 1
        mlp: Any = getattr(layer, "mlp", None)
        if _gated(mlp):
            act = mlp.act_fn
            mlp._act_mul = _recomputed(lambda gate, up, act=act: act(gate) * up)
            mlp.forward = types.MethodType(_gated_mlp_forward, mlp)
            count += 1
    final = getattr(decoder, "norm", None)  # the final norm, before the loss
    if isinstance(final, torch.nn.Module):
        final.forward = _recomputed(final.forward)
        count += 1
    return count
