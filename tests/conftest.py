"""Settings every test process shares (and passes on to the runner processes it starts)."""

import os

# With two busy cores, OpenMP's spinning threads slow torch on CPU many times over; a passive
# wait policy changes no result. Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Without CUDA, Triton kernels (`runner/llm/triton_*.py`) are tested through Triton's
# interpreter, which must be chosen before Triton is first imported.
try:
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
except ImportError:  # pragma: no cover - torch is a dependency
    pass
