"""A decoder's RMSNorms, rotary embedding and SiLU-gated product as Triton kernels.

Why: at batch 256 a decode step spends ~1.9 ms of its ~7.7 ms in small memory-bound kernels
(bench/RESULTS.md): each RMSNorm is six eager kernels in float32, the rotary embedding about a
dozen for q and k (slices, `cat`, products, sums), the MLP's SiLU and product two more, in
every layer. `compiled_parts` fuses them with torch.compile, but compiling costs 15-30 s, so
the phases switch it on only after 1M tokens. These kernels are one launch each and Triton
builds them in about a second (then from its disk cache), so the step graphs are lean from
the first batch. `fastgen` uses them until, and unless, the compiled parts take over; the
critic's eager forward uses them too.

What is replaced, inside `switched_on(model)` only (the model is unchanged after the block):
the forward of the families' RMSNorm modules and MLPs (`_FAMILIES`; a module with hooks is
left alone, as hooks would be skipped), and the family module's `apply_rotary_pos_emb`. Each
replacement takes the model's own path for inputs it does not handle (CPU, float32, odd
layouts).

Numerics: the kernels compute in float32. RMSNorm and the SiLU product round to the model
dtype where eager does (the normalised value, then its product with the weight; the
activation, then its product with `up`); they differ from eager by at most one rounding step,
in a few percent of elements, because the squares are summed in another order and Triton's
exponential and division are not torch's. The rotary kernel rounds once, where eager rounds
each product and the sum, so it gives the correctly rounded rotation (eager's can be a step
or more off where its two products nearly cancel). Used for bf16/fp16 on CUDA only: float32
models keep the model's own ops, which the greedy checks against `model.generate` rely on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from runner.llm.decoding import triton_support
from runner.llm.decoding.compiled_parts import family_module, installed
from runner.llm.decoding.static_kv import FAMILIES

try:  # as in triton_sampling: the kernels' source needs `tl` as a global
    import triton.language as tl
except ImportError:  # pragma: no cover
    tl = None

__all__ = ["ENABLED", "NAMES", "UNSPECIALISED", "rms_norm", "rotary", "silu_mul", "switched_on",
           "usable"]

ENABLED = True  # False: `usable` says no, so callers keep the model's own ops (benchmarks)
# Class-name prefixes of the modules of `static_kv.FAMILIES` (the model types taken).
_FAMILIES = ("Llama", "Mistral", "Qwen2", "Qwen3")
_HALF = (torch.bfloat16, torch.float16)
_MAX_NORM_WIDTH = 16384  # one program holds a whole row
_BLOCK = 1024  # elements a program of the SiLU product takes
_KERNELS: dict[str, Any] = {}
NAMES = ("rms_norm", "silu_mul", "rotary")
# Integer arguments Triton must not specialise on (it builds a variant for the value 1 and one
# for multiples of 16 by default). The rotary's strides and sequence length change between
# the prefill (seq = prompt width), a decode step (seq = 1) and the critic (seq = its bucket
# width, not always a multiple of 16): unspecialised, one build serves them all. A program
# loads HEAD_DIM/2 contiguous values per half, one or two a thread, so alignment facts about
# the strides would not vectorise anything anyway.
UNSPECIALISED: dict[str, tuple[str, ...]] = {
    "rotary": ("q_b", "q_h", "q_s", "k_b", "k_h", "k_s", "c_b", "c_s", "seq")}


def _rms_norm_source(x_ptr, w_ptr, out_ptr, x_row, out_row, width, eps,  # type: ignore[no-untyped-def]
                     BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < width
    x = tl.load(x_ptr + row * x_row + cols, mask=inside, other=0.0).to(tl.float32)
    variance = tl.sum(x * x, axis=0) / width
    # Eager: (x * rsqrt(variance + eps)).to(dtype), then weight * that, rounded again.
    normed = (x * tl.rsqrt(variance + eps)).to(out_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * out_row + cols, (w * normed).to(out_ptr.dtype.element_ty),
             mask=inside)


def _silu_mul_source(gate_ptr, up_ptr, out_ptr, count, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
    at = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = at < count
    g = tl.load(gate_ptr + at, mask=inside, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + at, mask=inside, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + at, (act * u).to(out_ptr.dtype.element_ty), mask=inside)


def _rotary_source(q_ptr, k_ptr, cos_ptr, sin_ptr, qo_ptr, ko_ptr,  # type: ignore[no-untyped-def]
                   q_b, q_h, q_s, k_b, k_h, k_s, c_b, c_s, seq,
                   Q_HEADS: tl.constexpr, HALF: tl.constexpr):
    # Program (b * seq + s, head): q's heads first, then k's. rotate_half(x) = cat(-x2, x1), so
    # out1 = x1*cos1 - x2*sin1 and out2 = x2*cos2 + x1*sin2, in float32, rounded once.
    pos = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    b = pos // seq
    s = pos % seq
    if head < Q_HEADS:
        src = q_ptr + b * q_b + head * q_h + s * q_s
        dst = qo_ptr + b * q_b + head * q_h + s * q_s
    else:
        src = k_ptr + b * k_b + (head - Q_HEADS) * k_h + s * k_s
        dst = ko_ptr + b * k_b + (head - Q_HEADS) * k_h + s * k_s
    d = tl.arange(0, HALF)
    dt = qo_ptr.dtype.element_ty
    x1 = tl.load(src + d).to(tl.float32)
    x2 = tl.load(src + HALF + d).to(tl.float32)
    c = cos_ptr + b * c_b + s * c_s
    n = sin_ptr + b * c_b + s * c_s
    cos1 = tl.load(c + d).to(tl.float32)
    cos2 = tl.load(c + HALF + d).to(tl.float32)
    sin1 = tl.load(n + d).to(tl.float32)
    sin2 = tl.load(n + HALF + d).to(tl.float32)
    tl.store(dst + d, (x1 * cos1 - x2 * sin1).to(dt))
    tl.store(dst + HALF + d, (x2 * cos2 + x1 * sin2).to(dt))


def _kernel(name: str) -> Any:
    if name not in _KERNELS:  # see triton_sampling._kernel: built on first use
        import triton  # noqa: PLC0415 - Triton is optional: only CUDA builds of the kernel need it

        _KERNELS[name] = triton.jit(globals()[f"_{name}_source"],
                                    do_not_specialize=UNSPECIALISED.get(name, ()))
    return _KERNELS[name]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * (x * rsqrt(mean(x²) + eps)) over the last axis, as the families' RMSNorm; x
    contiguous, weight of x's dtype."""
    width = x.shape[-1]
    rows = x.reshape(-1, width)
    out = torch.empty_like(rows)
    block = 1 << (width - 1).bit_length()
    _kernel("rms_norm")[(rows.shape[0],)](
        rows, weight, out, rows.stride(0), out.stride(0), width, float(eps), BLOCK=block,
        num_warps=max(1, min(16, block // 256)))
    return out.view(x.shape)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, each rounded to the dtype as eager rounds; both contiguous, one shape."""
    out = torch.empty_like(gate)
    count = gate.numel()
    _kernel("silu_mul")[(-(-count // _BLOCK),)](gate, up, out, count, BLOCK=_BLOCK, num_warps=4)
    return out


def rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The families' apply_rotary_pos_emb for q (batch, heads, seq, dim), k (batch, kv_heads,
    seq, dim), cos and sin (batch or 1, seq, dim), all with unit stride on dim; one launch."""
    b, hq, seq, dim = q.shape
    qo, ko = torch.empty_like(q), torch.empty_like(k)
    cos = cos.expand(b, seq, dim)
    sin = sin.expand(b, seq, dim)
    _kernel("rotary")[(b * seq, hq + k.shape[1])](
        q, k, cos, sin, qo, ko, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1),
        k.stride(2), cos.stride(0), cos.stride(1), seq, Q_HEADS=hq, HALF=dim // 2,
        num_warps=1)
    return qo, ko


def usable(model: Any, device: torch.device, dtype: torch.dtype) -> bool:
    """True where the kernels apply: a half-precision model of a known family on a device where
    the kernels run (`triton_support.available`)."""
    return (ENABLED and tl is not None and dtype in _HALF
            and getattr(getattr(model, "config", None), "model_type", None) in FAMILIES
            and triton_support.available(device))


def _plain(module: Any) -> bool:
    # Our call replaces `_call_impl`, which is what runs hooks (accelerate's included).
    return not (module._forward_hooks or module._forward_pre_hooks
                or hasattr(module, "_hf_hook"))


def _norm_call(module: Any) -> Callable[..., torch.Tensor]:
    eager = module._call_impl

    def call(x: torch.Tensor) -> torch.Tensor:
        w = module.weight
        if (x.is_cuda and x.dtype in _HALF and w.dtype == x.dtype and x.is_contiguous()
                and x.shape[-1] <= _MAX_NORM_WIDTH and w.shape == x.shape[-1:]):
            return rms_norm(x, w, module.variance_epsilon)
        return eager(x)

    return call


def _mlp_call(module: Any) -> Callable[..., torch.Tensor]:
    eager = module._call_impl

    def call(x: torch.Tensor) -> torch.Tensor:
        if not (x.is_cuda and x.dtype in _HALF):
            return eager(x)
        gate, up = module.gate_proj(x), module.up_proj(x)
        if not (gate.is_contiguous() and up.is_contiguous() and gate.dtype == x.dtype):
            return module.down_proj(module.act_fn(gate) * up)
        return module.down_proj(silu_mul(gate, up))

    return call


def _rotary_function(original: Callable[..., Any]) -> Callable[..., Any]:
    def apply(q: Any, k: Any, cos: Any, sin: Any, *args: Any, **kwargs: Any) -> Any:
        dim = q.shape[-1]
        fits = (not args and kwargs.get("unsqueeze_dim", 1) == 1 and q.is_cuda
                and q.dtype in _HALF and k.dtype == cos.dtype == sin.dtype == q.dtype
                and q.dim() == k.dim() == 4 and cos.dim() == 3 and dim % 2 == 0
                and cos.shape[-1] == dim and k.shape[-1] == dim and q.stride(-1) == 1
                and k.stride(-1) == 1 and cos.stride(-1) == 1 and sin.stride() == cos.stride()
                and q.shape[0] == k.shape[0] and cos.shape[0] in (1, q.shape[0])
                and q.shape[2] == k.shape[2] == cos.shape[1])
        return rotary(q, k, cos, sin) if fits else original(q, k, cos, sin, *args, **kwargs)

    return apply


def _calls(model: Any) -> list[tuple[Any, Callable[..., Any]]]:
    pairs: list[tuple[Any, Callable[..., Any]]] = []
    for m in model.modules():
        name = type(m).__name__
        if not (name.startswith(_FAMILIES) and _plain(m)):
            continue
        if name.endswith("RMSNorm") and hasattr(m, "variance_epsilon"):
            pairs.append((m, _norm_call(m)))
        elif (name.endswith("MLP") and type(getattr(m, "act_fn", None)).__name__
              in ("SiLU", "SiLUActivation") and hasattr(m, "gate_proj")):
            pairs.append((m, _mlp_call(m)))
    return pairs


@contextmanager
def switched_on(model: Any) -> Iterator[None]:
    """Run `model`'s norms, MLP products and rotary embedding as Triton kernels in the block."""
    family = family_module(model)
    name = "apply_rotary_pos_emb"
    original = getattr(family, name) if family is not None else None
    if original is not None:
        setattr(family, name, _rotary_function(original))
    try:
        with installed(_calls(model)):
            yield
    finally:
        if original is not None:
            setattr(family, name, original)
