"""Fixtures of the evaluation tests: a real LoRA adapter of `fixtures/tiny-base` and one
`evaluate` run through the engine's real `PhaseContext`, shared by the tests that read it.

No mocks: the adapter is made with peft's `get_peft_model` + `save_pretrained`, and the phase
reads it back with `PeftModel.from_pretrained`. Helpers live in `evalhelpers.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# The 1M-parameter model gains nothing from intra-op threads; on a shared 2-core machine one
# thread keeps generation fast and steady (see tests/llm/test_tiny_model.py).
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from evalhelpers import LIMIT, Evaluated, make_adapter, make_ctx, sft_records  # noqa: E402


@pytest.fixture(scope="session")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA adapter folder of tiny-base."""
    return make_adapter(tmp_path_factory.mktemp("sft") / "adapter")


@pytest.fixture(scope="session")
def evaluated(tmp_path_factory: pytest.TempPathFactory, adapter: Path) -> Evaluated:
    """`evaluate` on the first 12 items, batches of 5 (the last one short), via adapter_from."""
    from runner.llm.evaluation.phase import evaluate

    root = tmp_path_factory.mktemp("run")
    ctx = make_ctx(root, {"adapter_from": "sft", "limit": LIMIT, "batch_size": 5},
                   sft_records(adapter))
    metrics = evaluate(ctx)
    return Evaluated(root, adapter, ctx, metrics, ctx.records())
