"""kernel_prebuild.plan: the kernels a model builds, as data, and the wrapper call that launches each."""

import pytest
import torch
from transformers import LlamaConfig

from runner.llm.decoding import triton_attention, triton_parts, triton_sampling
from runner.llm.kernel_prebuild import helper as kernel_prebuild
from runner.llm.kernel_prebuild import plan as kernel_plan
from runner.llm.kernel_prebuild.plan import KernelShape

SMALL = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=512, vocab_size=3000)


def _shape():
    return kernel_plan.shape_of(LlamaConfig(**SMALL), torch.bfloat16, (9, 0))


def test_shape_of_reads_the_dimensions():
    """Hidden, heads, KV heads, head dim, MLP width, vocabulary, dtype and the GPU's sm."""
    assert _shape() == KernelShape(256, 4, 2, 64, 512, 3000, "bfloat16", 90)


def test_no_shape_where_no_kernel_runs():
    """float32, another family or a GPU before sm 8.0: nothing to build."""
    config = LlamaConfig(**SMALL)
    assert kernel_plan.shape_of(config, torch.float32, (9, 0)) is None
    assert kernel_plan.shape_of(config, torch.bfloat16, (7, 5)) is None
    config.model_type = "gpt2"
    assert kernel_plan.shape_of(config, torch.bfloat16, (9, 0)) is None


def test_plan_is_one_build_per_kernel():
    """Three decoder parts, the seven nucleus kernels, the decode attention (any length)."""
    names = kernel_plan.plan(_shape())
    assert names == ["parts.rms_norm", "parts.silu_mul", "parts.rotary",
                     *(f"sampling.{n}" for n in triton_sampling.SOURCES), "attention.decode"]


def test_no_attention_for_head_sizes_the_kernel_does_not_take():
    """A head dim of 32 keeps SDPA (triton_attention.usable), so it is not planned."""
    config = LlamaConfig(**{**SMALL, "hidden_size": 128})
    shape = kernel_plan.shape_of(config, torch.float16, (8, 0))
    assert not [n for n in kernel_plan.plan(shape) if n.startswith("attention")]


def test_shape_round_trips_through_json():
    """What the helper process gets on its command line is the same shape."""
    assert KernelShape.from_json(_shape().to_json()) == _shape()


def test_unknown_kernel_is_refused():
    """A name outside the plan is an error, not a silent no-op."""
    with pytest.raises(ValueError, match="no kernel"):
        kernel_plan.call("parts.softmax", _shape())


class _Recorder:
    """A JIT kernel's stand-in that records each build request."""

    def __init__(self):
        self.calls = []

    def warmup(self, *args, grid, **kwargs):
        self.calls.append((args, kwargs))
        return None


@pytest.fixture
def own_kernels(monkeypatch):
    """Our modules' kernel tables, restored after the test (`_install` replaces entries)."""
    monkeypatch.setattr(triton_parts, "_KERNELS", {})
    monkeypatch.setattr(triton_sampling, "_KERNELS", {})
    monkeypatch.setattr(triton_attention, "_KERNELS", [])


@pytest.mark.parametrize("name", kernel_plan.plan(_shape()))
def test_each_planned_call_builds_exactly_its_kernel(monkeypatch, own_kernels, name):
    """The wrapper call of each plan entry reaches that kernel, once, and builds no other."""
    jits = {n: _Recorder() for n in kernel_plan.plan(_shape())}
    monkeypatch.setattr(kernel_prebuild, "_JITS", jits)
    built = []
    kernel_prebuild._install(name, built)
    kernel_plan.call(name, _shape())()
    assert built == [name] and len(jits[name].calls) == 1
    assert all(not j.calls for n, j in jits.items() if n != name)


def test_attention_is_built_for_a_runtime_cache_length(monkeypatch, own_kernels):
    """The attention's cache length is an argument, not a constexpr: one build for all."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the GPU build's signature
    jits = {n: _Recorder() for n in kernel_plan.plan(_shape())}
    monkeypatch.setattr(kernel_prebuild, "_JITS", jits)
    kernel_prebuild._install("attention.decode", [])
    kernel_plan.call("attention.decode", _shape())()
    (_args, kwargs), = jits["attention.decode"].calls
    assert kwargs["length"] % 16 == 0 and "LENGTH" not in kwargs
    assert kwargs["HEAD_DIM"] == 64 and kwargs["GROUP"] == 2


def test_read_config_gives_the_shape_without_transformers(tmp_path):
    """A model folder's config.json gives the same shape as transformers' config does."""
    LlamaConfig(**SMALL).to_json_file(tmp_path / "config.json")
    config = kernel_plan.read_config(tmp_path)
    assert kernel_plan.shape_of(config, torch.bfloat16, (9, 0)) == _shape()


def test_read_config_of_a_folder_without_one_is_none(tmp_path):
    """No config.json (a hub id, a typo): None, for the caller to fall back on."""
    assert kernel_plan.read_config(tmp_path / "missing") is None
    (tmp_path / "config.json").write_text("[1, 2]")
    assert kernel_plan.read_config(tmp_path) is None
