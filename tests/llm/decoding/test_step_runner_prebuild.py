"""step_runner.prebuild_kernels: only where kernels would run; on CUDA it builds them on a thread."""

import pytest
import torch
from structlog.testing import capture_logs
from transformers import LlamaConfig

from runner.llm.decoding import step_runner as prebuild

SMALL = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=512, vocab_size=3000)


def test_no_prebuild_on_cpu():
    """On CPU there is nothing to build: no thread."""
    assert prebuild.prebuild_kernels(LlamaConfig(**SMALL), torch.bfloat16, torch.device("cpu")) is None


def test_no_prebuild_for_float32_or_other_families():
    """float32 models and families outside FAMILIES use no Triton parts: no thread."""
    cuda = torch.device("cuda")
    assert prebuild.prebuild_kernels(LlamaConfig(**SMALL), torch.float32, cuda) is None
    other = LlamaConfig(**SMALL)
    other.model_type = "gpt2"
    assert prebuild.prebuild_kernels(other, torch.bfloat16, cuda) is None


def test_one_layer_model_has_the_shape():
    """The stand-in keeps every dimension but the layer count."""
    model = prebuild._one_layer(LlamaConfig(**SMALL), torch.float32, torch.device("cpu"))
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.vocab_size, c.num_key_value_heads) == (
        1, 256, 3000, 2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_prebuild_builds_once_per_shape():
    """On CUDA a thread builds the kernels and logs it; the same shape starts no second one."""
    config = LlamaConfig(**{**SMALL, "hidden_size": 512, "intermediate_size": 1024})
    with capture_logs() as logs:
        thread = prebuild.prebuild_kernels(config, torch.bfloat16, torch.device("cuda"))
        assert thread is not None
        thread.join(timeout=300)
    assert [e["event"] for e in logs] == ["kernels_prebuilt"]
    assert prebuild.prebuild_kernels(config, torch.bfloat16, torch.device("cuda")) is None
