"""The critic's forward: right padding without a mask, and when layers are compiled."""

import pytest
import torch

from runner.llm.critic import forward as critic_forward
from runner.llm.critic.forward import COMPILE_AFTER_TOKENS, next_token_logits, should_compile
from runner.llm.decoding import triton_parts, triton_support
from runner.llm.loading import loader

ROWS = [[5, 9, 13, 2, 7, 7, 30], [11, 4], [8, 8, 8, 8, 100], [42]]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture
def lm(tiny_model, fresh_loader):
    """The tiny model in float32 on CPU."""
    return loader.load_model({"path": str(tiny_model), "device": "cpu", "dtype": "float32"})


@torch.inference_mode()
def test_right_padding_gives_the_left_padded_logits(lm):
    """Rows of four lengths: unmasked right padding equals the masked left-padded call."""
    right = next_token_logits(lm, ROWS)
    left = critic_forward._left_padded(lm, ROWS)
    assert right.shape == (4, lm.model.config.vocab_size)
    assert torch.allclose(right, left, atol=1e-4)


@torch.inference_mode()
def test_each_row_equals_its_unpadded_forward(lm):
    """Padding after a prompt changes nothing: row i equals a forward of row i alone."""
    batched = next_token_logits(lm, ROWS)
    for i, row in enumerate(ROWS):
        alone = lm.model(torch.tensor([row])).logits[0, -1].float()
        assert torch.allclose(batched[i], alone, atol=1e-4)


@torch.inference_mode()
def test_unsupported_family_keeps_the_masked_call(lm, monkeypatch):
    """A model outside the known families goes through the left-padded, masked call."""
    monkeypatch.setattr(critic_forward, "supported", lambda model: False)
    seen = []
    monkeypatch.setattr(critic_forward, "_right_padded", lambda *a: seen.append(a))
    next_token_logits(lm, ROWS)
    assert seen == []


def test_auto_compiles_only_on_cuda_after_enough_tokens(monkeypatch):
    """auto: never on CPU; on CUDA once COMPILE_AFTER_TOKENS were scored eagerly."""
    monkeypatch.delenv(critic_forward.COMPILE_ENV, raising=False)
    assert not should_compile(CPU, 10 * COMPILE_AFTER_TOKENS)
    assert not should_compile(CUDA, COMPILE_AFTER_TOKENS - 1)
    assert should_compile(CUDA, COMPILE_AFTER_TOKENS)


def test_environment_forces_compiling_on_or_off(monkeypatch):
    """RUNNER_CRITIC_COMPILE=always|never overrides the token rule."""
    monkeypatch.setenv(critic_forward.COMPILE_ENV, "always")
    assert should_compile(CPU, 0)
    monkeypatch.setenv(critic_forward.COMPILE_ENV, "never")
    assert not should_compile(CUDA, 10 * COMPILE_AFTER_TOKENS)


def test_unknown_compile_mode_is_refused(monkeypatch):
    """A misspelt mode names the variable and the allowed values."""
    monkeypatch.setenv(critic_forward.COMPILE_ENV, "sometimes")
    with pytest.raises(ValueError, match="RUNNER_CRITIC_COMPILE='sometimes': use auto"):
        should_compile(CPU, 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.inference_mode()
def test_cuda_compiled_layers_give_the_eager_logits(tiny_model, fresh_loader, monkeypatch):
    """Compiled layers (float32, CUDA) give the eager logits and are switched off after."""
    lm = loader.load_model({"path": str(tiny_model), "device": "cuda", "dtype": "float32"})
    monkeypatch.setenv(critic_forward.COMPILE_ENV, "never")
    eager = next_token_logits(lm, ROWS)
    monkeypatch.setenv(critic_forward.COMPILE_ENV, "always")
    compiled = next_token_logits(lm, ROWS)
    assert critic_forward._COMPILED.get(lm.model) is not None
    assert torch.allclose(compiled, eager, atol=1e-4)
    assert all(layer._compiled_call_impl is None for layer in lm.model.get_decoder().layers)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@torch.inference_mode()
def test_cuda_kernel_build_failure_scores_with_the_models_own_ops(tiny_model, fresh_loader,
                                                                  monkeypatch):
    """bf16 on CUDA: if the Triton parts cannot be built, the kernels are switched off and the
    forward runs again with the model's ops, giving what a forward without kernels gives."""
    lm = loader.load_model({"path": str(tiny_model), "device": "cuda", "dtype": "bfloat16"})
    monkeypatch.setenv(critic_forward.COMPILE_ENV, "never")
    monkeypatch.setattr(triton_support, "_FAILURES", [])  # kernels on; restored after

    def no_compiler(*args):
        raise RuntimeError("Failed to find C compiler")

    monkeypatch.setattr(triton_parts, "rotary", no_compiler)
    fell_back = next_token_logits(lm, ROWS)
    assert triton_support.switched_off()
    assert torch.equal(fell_back, next_token_logits(lm, ROWS))
