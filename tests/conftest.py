"""Settings every test process shares (and passes on to the runner processes it starts)."""

import os

# With two busy cores, OpenMP's spinning threads slow torch on CPU many times over; a passive
# wait policy changes no result. Set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
