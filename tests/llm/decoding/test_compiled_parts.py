"""Which pieces of a decoder get compiled, and switching compiled calls on and off."""

import pytest
import torch

from runner.llm.decoding import compiled_parts
from runner.llm.decoding.compiled_parts import installed
from runner.llm.loading import loader


def test_installed_runs_the_given_call_then_restores_the_module():
    """Inside the block the module answers with the installed call; after it, as before."""
    layer = torch.nn.Linear(2, 2)
    x = torch.ones(1, 2)
    plain = layer(x)
    with installed([(layer, lambda *a, **k: "compiled")]):
        assert layer(x) == "compiled"
    assert layer._compiled_call_impl is None and torch.equal(layer(x), plain)


def test_parts_of_a_llama_are_norms_rotary_mlps_and_the_rotary_function(tiny_model, fresh_loader):
    """The tiny Llama: every RMSNorm, its rotary embedding, each layer's MLP; modeling_llama."""
    model = loader.load_model({"path": str(tiny_model)}).model
    names = sorted({type(m).__name__ for m in compiled_parts._modules(model)})
    assert names == ["LlamaMLP", "LlamaRMSNorm", "LlamaRotaryEmbedding"]
    family = compiled_parts.family_module(model)
    assert family.__name__.endswith("modeling_llama") and callable(family.apply_rotary_pos_emb)


def test_mode_reads_the_environment_and_defaults_to_auto(monkeypatch):
    """Unset or empty is auto; a value is case- and space-insensitive; anything else is refused."""
    monkeypatch.delenv("RUNNER_TEST_COMPILE", raising=False)
    assert compiled_parts.mode("RUNNER_TEST_COMPILE") == "auto"
    monkeypatch.setenv("RUNNER_TEST_COMPILE", " Never ")
    assert compiled_parts.mode("RUNNER_TEST_COMPILE") == "never"
    monkeypatch.setenv("RUNNER_TEST_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="use auto, always or never"):
        compiled_parts.mode("RUNNER_TEST_COMPILE")
