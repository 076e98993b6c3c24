"""Which Triton kernels a model's decoding builds, as data, and how to call each without a GPU.

A fresh process on a machine with an empty Triton cache builds every kernel on its first
call (bench/first_call.py: ~5 s of a 6.4 s first `generate` on the H200). What Triton
builds is one binary per *specialisation*: the kernel, its constexprs, num_warps, each
pointer's dtype and alignment, and each unmarked integer argument's type and whether it is
1 or a multiple of 16. For our kernels (`triton_parts`, `triton_sampling`,
`triton_attention`) those depend on the model's dimensions and dtype alone, once the
arguments that vary from call to call are left unspecialised (the `UNSPECIALISED` tables;
the decode attention's cache length is a runtime argument).

`plan(shape)` lists the kernels; `call(name, shape)` makes the wrapper call that launches
kernel `name` (the same `triton_parts.rms_norm`, `triton_sampling.nucleus_draw`, ... the
decoder calls) on `meta` tensors laid out as the families' modules lay them out: no memory,
no device, but the same specialisation (a meta tensor's address is 0, aligned as every
allocation of the CUDA caching allocator is). `kernel_prebuild` calls them with launches
turned into builds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from runner.llm.decoding import triton_attention, triton_parts, triton_sampling
from runner.llm.decoding.static_kv import FAMILIES

__all__ = ["KernelShape", "call", "plan", "read_config", "shape_of"]

_HALF = {"bfloat16": torch.bfloat16, "float16": torch.float16}
_ROWS = 16  # rows of the stand-in calls: a multiple of 16, as most real row counts' products are


@dataclass(frozen=True)
class KernelShape:
    """What our kernels are specialised on: the model's dimensions, dtype and the GPU."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype: str  # "bfloat16" | "float16"
    capability: int  # 90 for compute capability 9.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KernelShape:
        return cls(**data)


def shape_of(config: Any, dtype: torch.dtype, capability: tuple[int, int]) -> KernelShape | None:
    """The shape of a model of `config` in `dtype` on a GPU of `capability`; None where the
    decoder would use none of our kernels (float32, another family, an older GPU)."""
    name = str(dtype).removeprefix("torch.")
    if (name not in _HALF or getattr(config, "model_type", None) not in FAMILIES
            or tuple(capability) < (8, 0)):
        return None
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return KernelShape(config.hidden_size, heads, kv_heads, head_dim, config.intermediate_size,
                       config.vocab_size, name, capability[0] * 10 + capability[1])


def read_config(path: str | Path) -> SimpleNamespace | None:
    """The fields of a model folder's config.json that `shape_of` reads, without importing
    transformers (seconds the helper would otherwise start later); None if there is none."""
    try:
        data = json.loads((Path(path).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return SimpleNamespace(**data) if isinstance(data, dict) else None


def plan(shape: KernelShape) -> list[str]:
    """The kernels (one specialisation each) a model of `shape` builds when decoding and
    scoring: the decoder parts, the nucleus draw's kernels, the decode attention."""
    names = [f"parts.{n}" for n in triton_parts.NAMES]
    names += [f"sampling.{n}" for n in triton_sampling.SOURCES]
    if shape.head_dim in (64, 128, 256):  # what triton_attention.usable takes
        names.append("attention.decode")
    return names


def call(name: str, shape: KernelShape) -> Callable[[], Any]:
    """The wrapper call that launches kernel `name` (and maybe others of its wrapper)."""
    dt = _HALF[shape.dtype]
    meta = torch.device("meta")

    def empty(*size: int, dtype: torch.dtype = dt) -> torch.Tensor:
        return torch.empty(*size, dtype=dtype, device=meta)

    b, seq, d = _ROWS, _ROWS, shape.head_dim
    family, _, what = name.partition(".")
    if name == "parts.rms_norm":
        return lambda: triton_parts.rms_norm(empty(b, shape.hidden), empty(shape.hidden), 1e-6)
    if name == "parts.silu_mul":
        return lambda: triton_parts.silu_mul(empty(b, shape.intermediate),
                                             empty(b, shape.intermediate))
    if name == "parts.rotary":
        # As the families make them: q_proj(x).view(b, seq, heads, d).transpose(1, 2); cos
        # and sin (b, seq, d) in the model's dtype.
        q = empty(b, seq, shape.heads, d).transpose(1, 2)
        k = empty(b, seq, shape.kv_heads, d).transpose(1, 2)
        return lambda: triton_parts.rotary(q, k, empty(b, seq, d), empty(b, seq, d))
    if family == "sampling" and what in triton_sampling.SOURCES:
        logits = empty(2, shape.vocab, dtype=torch.float32)
        keys, step = empty(2, 2, dtype=torch.long), empty(1, dtype=torch.long)
        return lambda: triton_sampling.nucleus_draw(logits, keys, step, 0.7, 0.9)
    if name == "attention.decode":
        length = 64  # any multiple of 16, as the runners' cache lengths are
        q = empty(b, 1, shape.heads, d).transpose(1, 2)
        k, v = empty(b, shape.kv_heads, length, d), empty(b, shape.kv_heads, length, d)
        mask = empty(b, 1, 1, length)
        return lambda: triton_attention.decode_attention(q, k, v, mask, d**-0.5)
    raise ValueError(f"no kernel {name!r} in the plan")
