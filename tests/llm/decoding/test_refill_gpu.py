"""Continuous refill on CUDA in float32: graphs captured, rows equal to rows run alone."""

import pytest
import torch
from structlog.testing import capture_logs

from runner.llm.decoding import fastgen, refill
from runner.llm.decoding.generation import SamplingParams
from runner.llm.loading import loader

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

TEXTS = ["### Instruction:\nWrite", "Below are examples of tasks.\n\n### Instruction:\n", "x",
         "Name three", "The sea is", "1, 2, 3,", "A poem:", "Q: why?\nA:"]


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model on CUDA in float32."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model), "device": "cuda", "dtype": "float32"})


def _work(lm):
    ids = lm.encode(TEXTS)
    return [(0, ids[:3], 5), (1, ids[3:8], 6), (2, ids[1:4], 7)]


def _alone(lm, work, sp):
    return {tag: [fastgen.generate_static(lm, [row], [i], sp, seed)[0]
                  for i, row in enumerate(rows)] for tag, rows, seed in work}


@pytest.mark.parametrize("sp", [
    SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=30),
    SamplingParams(temperature=0, max_new_tokens=30, stop_strings=("\n",)),
])
def test_cuda_refill_equals_rows_run_alone(lm, sp):
    """Three slots refilled through graphs give each row what it gives alone (lockstep)."""
    work = _work(lm)
    with capture_logs() as logs:
        got = dict(refill.stream_refill(lm, work, sp, 3))
    events = [e["event"] for e in logs]
    assert "fastgen_captured" in events and "cuda_graph_unavailable" not in events
    fastgen.clear_runners()
    assert got == _alone(lm, work, sp)


def test_cuda_refill_does_not_depend_on_slots(lm):
    """Two slots or eight: the same generations."""
    sp = SamplingParams(temperature=0.8, top_p=0.95, repetition_penalty=1.1, max_new_tokens=20)
    work = _work(lm)
    two = dict(refill.stream_refill(lm, work, sp, 2))
    eight = dict(refill.stream_refill(lm, work, sp, 8))
    assert two == eight
