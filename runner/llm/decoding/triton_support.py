"""Where our Triton kernels run, and switching them off for the process when they cannot.

The kernels (`triton_sampling`, `triton_attention`, `triton_parts`) are built by Triton on
their first call, which needs more than an importable `triton`: a GPU it generates code for
and, at build time, a C compiler for its launcher and `ptxas`. Slim containers lack the
compiler, and older cards lack what the kernels use (bf16, the tensor-core `dot` shapes). So:

- `available(device)` says yes only for CUDA devices of compute capability 8.0 or later
  (Ampere, Hopper, Blackwell: what the kernels were written and measured for) with Triton
  importable, and only until a kernel has failed in this process;
- `switch_off(error, log)` records such a failure with one warning; from then on every caller
  takes its torch path (the torch nucleus search, SDPA, the model's own ops), which computes
  the same things. `fastgen` and `critic_forward` call it when a call that used the kernels
  raised anything but an out-of-memory error, and then repeat the call without them.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    import triton
except ImportError:  # pragma: no cover - CPU builds of torch without Triton
    triton = None

__all__ = ["MIN_CAPABILITY", "available", "switch_off", "switched_off"]

MIN_CAPABILITY = (8, 0)
_FAILURES: list[str] = []  # why the kernels were switched off, if they were


def available(device: torch.device) -> bool:
    """True where our Triton kernels may run: CUDA, capability 8.0+, none failed yet."""
    if triton is None or device.type != "cuda" or _FAILURES:
        return False
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


def switch_off(error: BaseException, log: Any) -> None:
    """No Triton kernels for the rest of the process; say why, once."""
    if not _FAILURES:
        log.warning("triton_kernels_switched_off", error=f"{type(error).__name__}: {error}"[:300],
                    fallback="torch nucleus search, SDPA, the model's own ops")
    _FAILURES.append(str(error))


def switched_off() -> bool:
    """Whether a kernel failed in this process (tests reset it by clearing the list)."""
    return bool(_FAILURES)
