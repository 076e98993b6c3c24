"""GPU tier: the pilot on a random-initialised Llama through the real CLI (skipped without CUDA)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

ROOT = Path(__file__).resolve().parents[3]


def _bench_module():
    spec = importlib.util.spec_from_file_location("run_pilot", ROOT / "bench" / "gpu" / "run_pilot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pilot_on_random_llama_reaches_gate_on_cuda(tmp_path):
    """The pilot runs every model phase on CUDA in bf16 and stops at its QC gate."""
    model = tmp_path / "llama"
    _bench_module().build_model(model, tiny=False)
    state = tmp_path / "state"
    run = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(ROOT / "bench" / "gpu" / "pilot_1b.yaml"),
         "--run-id", "gpu", "--state-dir", str(state), "--set", f"model_path={model}",
         "--set", "examples=32"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert run.returncode == 3, run.stderr[-2000:]
    status = json.loads(subprocess.run(
        [sys.executable, "-m", "runner", "status", "gpu", "--json", "--state-dir", str(state)],
        capture_output=True, text=True, cwd=ROOT, check=True).stdout)
    by_name = {p["name"]: p for p in status["phases"]}
    for name in ("generate_instructions", "critic_instructions", "generate_responses", "critic_pairs"):
        assert by_name[name]["used_cuda"], name
    provenance = json.loads((state / "gpu" / "phases" / "generate_instructions.i1" / "model.json").read_text())
    assert provenance["dtype"] == "bfloat16" and provenance["device"].startswith("cuda")
    assert "median_response_tokens" in by_name["qc"]["metrics"]
