"""Shared-prefix prefill on CUDA in float32, through graphs: the rows of whole prefills."""

import pytest
import torch
from structlog.testing import capture_logs

# The CPU tests' prompts: a few-shot block shared by rows that differ in their last line.
from test_refill_prefix import BLOCK, ENDINGS  # this folder is on sys.path (rootdir mode)

from runner.llm.decoding import fastgen, refill
from runner.llm.decoding.generation import SamplingParams
from runner.llm.decoding.slot_runner import SlotRunner
from runner.llm.loading import loader

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model on CUDA in float32."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model), "device": "cuda", "dtype": "float32"})


def _work(lm):
    ids = lm.encode([BLOCK + e for e in ENDINGS])
    return [(0, ids[:4], 5), (1, [ids[4], ids[0], ids[2]], 6)]


def _run(lm, work, sp, slots, prefix_min):
    fastgen.clear_runners()
    return dict(refill.stream_refill(lm, work, sp, slots, prefix_min=prefix_min))


@pytest.mark.parametrize("sp", [
    SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=30),
    SamplingParams(temperature=0, max_new_tokens=30, stop_strings=("\n",)),
], ids=["sampled", "greedy"])
def test_cuda_shared_prefix_equals_whole_prefill(lm, sp, monkeypatch):
    """Four slots through graphs: prefix prefilled once, rows equal to whole prefills."""
    work = _work(lm)
    whole = _run(lm, work, sp, 4, 0)
    calls = []
    real = SlotRunner._prefill_shared

    def counting(self, slots, ids, mask, prefix):
        calls.append(len(slots))
        return real(self, slots, ids, mask, prefix)

    monkeypatch.setattr(SlotRunner, "_prefill_shared", counting)
    with capture_logs() as logs:
        shared = _run(lm, work, sp, 4, 8)
    events = [e["event"] for e in logs]
    assert "fastgen_captured" in events and "cuda_graph_unavailable" not in events
    assert calls and max(calls) > 1
    assert shared == whole


def test_cuda_shared_prefix_does_not_depend_on_slots(lm):
    """Two slots or eight, prefixes shared: the same generations."""
    sp = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=20)
    work = _work(lm)
    assert _run(lm, work, sp, 2, 8) == _run(lm, work, sp, 8, 8)


def test_cuda_two_items_in_one_round_share_their_own_prefixes(lm):
    """Two items with different few-shot blocks admitted in one round: equal to whole prefills."""
    sp = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=20)
    other = BLOCK.replace("Name a colour.", "Count to three, slowly please.")
    work = [(0, lm.encode([BLOCK + e for e in ENDINGS[:3]]), 3),
            (1, lm.encode([other + e for e in ENDINGS[2:5]]), 4)]
    assert _run(lm, work, sp, 6, 8) == _run(lm, work, sp, 6, 0)
