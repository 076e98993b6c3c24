"""The fast generation loop on CUDA: graphs captured, greedy equal to generate (device only)."""

import pytest
import torch
from structlog.testing import capture_logs

from runner.llm.decoding import fastgen, triton_parts, triton_support
from runner.llm.decoding.generation import SamplingParams, engine_for, generate
from runner.llm.loading import loader

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PROMPTS = ["### Instruction:\nWrite", "Below are examples of tasks.\n\n### Instruction:\n", "x"]
SAMPLED = SamplingParams(temperature=1.0, top_p=0.9, repetition_penalty=1.2, max_new_tokens=24)


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model on CUDA in float32 (so greedy can be compared token for token)."""
    fastgen.clear_runners()
    return loader.load_model({"path": str(tiny_model), "device": "cuda", "dtype": "float32"})


def test_cuda_auto_engine_is_static(lm):
    """On CUDA `auto` picks the fast loop for a Llama."""
    assert engine_for(lm) == "static"


def test_cuda_decode_steps_are_graphs(lm):
    """The decode step is captured as a CUDA graph (no eager fallback)."""
    with capture_logs() as logs:
        generate(lm, lm.encode(PROMPTS), SAMPLED, 1)
    events = [e["event"] for e in logs]
    assert "fastgen_captured" in events and "cuda_graph_unavailable" not in events


def test_cuda_greedy_matches_transformers_generate(lm):
    """Greedy through the graphs equals model.generate(do_sample=False) token for token."""
    ids = lm.encode(PROMPTS)
    ours = generate(lm, ids, SamplingParams(temperature=0, max_new_tokens=40), 0)
    batch = lm.tokenizer.pad({"input_ids": ids}, return_tensors="pt").to("cuda")
    ref = lm.model.generate(**batch, do_sample=False, max_new_tokens=40,
                            pad_token_id=lm.tokenizer.pad_token_id)
    width = batch["input_ids"].shape[1]
    expected = [ref[i, width : width + g.tokens].tolist() for i, g in enumerate(ours)]
    assert [list(g.token_ids) for g in ours] == expected


def test_cuda_graphs_equal_eager_steps(lm):
    """Replayed graphs sample exactly the rows the same loop gives run eagerly."""
    ids = lm.encode(PROMPTS)
    places = list(range(len(ids)))
    graphed = fastgen.generate_static(lm, ids, places, SAMPLED, 4, graphs=True)
    fastgen.clear_runners()
    assert graphed == fastgen.generate_static(lm, ids, places, SAMPLED, 4, graphs=False)


def test_cuda_topk_miss_gives_the_full_sort_result(lm):
    """Misses of 2 candidates rewind to the sort variant: the rows equal always sorting's."""
    ids = lm.encode(PROMPTS)
    places = list(range(len(ids)))
    vocab = lm.model.config.vocab_size
    few = fastgen.generate_static(lm, ids, places, SAMPLED, 7, candidates=2,
                                    nucleus="topk")
    fastgen.clear_runners()
    assert few == fastgen.generate_static(lm, ids, places, SAMPLED, 7, candidates=vocab,
                                          nucleus="topk")


def test_cuda_triton_bisect_equals_eager_bisect(lm):
    """The Triton nucleus kernel (default on CUDA) samples the eager torch search's rows."""
    ids = lm.encode(PROMPTS)
    places = list(range(len(ids)))
    fused = fastgen.generate_static(lm, ids, places, SAMPLED, 7)
    fastgen.clear_runners()
    assert fused == fastgen.generate_static(lm, ids, places, SAMPLED, 7, nucleus="bisect-eager")


def test_cuda_runner_is_reused_for_the_same_shape(lm):
    """A second call of the same shape captures nothing and gives the same rows."""
    ids = lm.encode(PROMPTS)
    first = generate(lm, ids, SAMPLED, 2)
    with capture_logs() as logs:
        second = generate(lm, ids, SAMPLED, 2)
    assert second == first and "fastgen_captured" not in [e["event"] for e in logs]


def test_cuda_compiled_parts_keep_greedy_output(lm, monkeypatch):
    """Compiled norms, rotary and MLPs in the step graphs give the same greedy rows."""
    ids = lm.encode(PROMPTS)
    greedy = SamplingParams(temperature=0, max_new_tokens=40)
    monkeypatch.setenv(fastgen.COMPILE_ENV, "never")
    plain = generate(lm, ids, greedy, 0)
    monkeypatch.setenv(fastgen.COMPILE_ENV, "always")
    with capture_logs() as logs:
        compiled = generate(lm, ids, greedy, 0)
    assert "decode_compile_failed" not in [e["event"] for e in logs]
    assert compiled == plain


@pytest.fixture
def bf16(tiny_model, fresh_loader):
    """The tiny model on CUDA in bf16 (where the Triton parts run); kernels on before and after."""
    fastgen.clear_runners()
    triton_support._FAILURES.clear()
    yield loader.load_model({"path": str(tiny_model), "device": "cuda", "dtype": "bfloat16"})
    triton_support._FAILURES.clear()
    fastgen.clear_runners()


def test_cuda_kernel_build_failure_falls_back_to_the_torch_paths(bf16, monkeypatch):
    """A Triton kernel that cannot be built (no C compiler, say) switches the kernels off with
    one warning; the call returns the rows a call without kernels gives."""
    ids = bf16.encode(PROMPTS)

    def no_compiler(*args):
        raise RuntimeError("Failed to find C compiler. Please specify via CC")

    monkeypatch.setattr(triton_parts, "rms_norm", no_compiler)
    with capture_logs() as logs:
        fell_back = generate(bf16, ids, SAMPLED, 5)
    warnings = [e for e in logs if e["event"] == "triton_kernels_switched_off"]
    assert len(warnings) == 1 and "C compiler" in warnings[0]["error"]
    assert not triton_support.available(bf16.device)
    fastgen.clear_runners()
    assert fell_back == generate(bf16, ids, SAMPLED, 5)  # kernels still off: the torch paths


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_model_on_the_second_gpu_generates_what_the_first_does(tiny_model, fresh_loader):
    """Graphs and Triton kernels run on the model's device, not the current one (cuda:0)."""
    first = loader.load_model({"path": str(tiny_model), "device": "cuda:0", "dtype": "bfloat16"})
    ids = first.encode(PROMPTS)
    on_first = generate(first, ids, SAMPLED, 3)
    fastgen.clear_runners()
    loader.clear_models()
    second = loader.load_model({"path": str(tiny_model), "device": "cuda:1", "dtype": "bfloat16"})
    assert torch.cuda.current_device() == 0
    assert generate(second, ids, SAMPLED, 3) == on_first


def test_cuda_auto_never_compiles_a_model_the_triton_parts_cover(bf16, lm, monkeypatch):
    """`auto` keeps the Triton parts for a bf16 Llama however much it generated; a float32
    model (no Triton parts) still compiles once it passes the threshold."""
    monkeypatch.delenv(fastgen.COMPILE_ENV, raising=False)
    for model in (bf16, lm):
        fastgen.count_generated(model, fastgen.COMPILE_AFTER_TOKENS)
    assert not fastgen.wants_compiled(bf16, graphs=True)
    assert fastgen.wants_compiled(lm, graphs=True)
    monkeypatch.setenv(fastgen.COMPILE_ENV, "always")
    assert fastgen.wants_compiled(bf16, graphs=True)
