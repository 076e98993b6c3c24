"""Loading the tiny base model for LoRA training (CPU path): checkpointing, seeded init."""

from __future__ import annotations

import pytest
import torch
from sfthelpers import TINY_BASE

from runner.llm.sft.model import LoraSettings, adapter_state, load_for_training

CPU = torch.device("cpu")


def _layers_checkpointed(fraction: float) -> list[bool]:
    model = load_for_training(str(TINY_BASE), CPU, LoraSettings(), 0, fraction)
    return [layer.gradient_checkpointing for layer in model.get_base_model().model.layers]


@pytest.mark.parametrize(("fraction", "expected"), [
    (0.5, [True, False, True, False]), (0.0, [False] * 4), (1.0, [True] * 4)])
def test_checkpointing_fraction_marks_evenly_spaced_layers(fraction: float,
                                                           expected: list[bool]) -> None:
    """A fraction of the 4 decoder layers, evenly spaced, is checkpointed (0.5: layers 0, 2)."""
    assert _layers_checkpointed(fraction) == expected


def test_lora_initialisation_depends_on_the_seed_only() -> None:
    """Two loads with one seed give equal LoRA tensors; another seed gives other ones."""
    lora = LoraSettings(r=4)
    a = adapter_state(load_for_training(str(TINY_BASE), CPU, lora, 11, 0.0))
    b = adapter_state(load_for_training(str(TINY_BASE), CPU, lora, 11, 0.0))
    c = adapter_state(load_for_training(str(TINY_BASE), CPU, lora, 12, 0.0))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if "lora_A" in k)


def test_target_modules_list_limits_the_adapters() -> None:
    """target_modules [q_proj, v_proj] puts LoRA on those projections only."""
    lora = LoraSettings(target_modules=("q_proj", "v_proj"))
    names = adapter_state(load_for_training(str(TINY_BASE), CPU, lora, 0, 0.0)).keys()
    assert names and all(".q_proj." in n or ".v_proj." in n for n in names)


def _norm_output_dtypes(bf16_norms: bool) -> set[torch.dtype]:
    from transformers import AutoModelForCausalLM

    from runner.llm.sft.model import prepare_base

    model = AutoModelForCausalLM.from_pretrained(str(TINY_BASE), dtype=torch.bfloat16,
                                                 local_files_only=True)
    model = prepare_base(model, bf16_norms)
    assert not any(p.requires_grad for p in model.parameters())
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
             for name, m in model.named_modules() if name.endswith("layernorm")]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    for h in hooks:
        h.remove()
    return seen


def test_bf16_norms_keep_norm_outputs_bf16() -> None:
    """bf16_norms: the base stays bf16 and frozen; every norm's output is bf16."""
    assert _norm_output_dtypes(True) == {torch.bfloat16}


def test_qlora_recipe_norms_output_float32() -> None:
    """The plain recipe (float32 norm weights) makes every norm's output float32."""
    assert _norm_output_dtypes(False) == {torch.float32}


@pytest.mark.slow
def test_compiled_layers_give_the_eager_loss_and_gradients() -> None:
    """compile_mode: each layer compiled; loss and LoRA gradients match eager (no dropout)."""
    from runner.llm.sft.data import DataPosition, DataStream, Example
    from runner.llm.sft.loss import sft_loss_sum
    from runner.llm.sft.model import SpeedOptions, trainable_parameters

    examples = [Example(tuple(range(5, 5 + n)), n // 3) for n in (20, 31, 12, 40)]
    batch, _ = DataStream(examples, 0, 2, 64, True, 0, fixed_width=True).next(DataPosition())
    results = []
    for mode in (None, "default"):
        model = load_for_training(str(TINY_BASE), CPU, LoraSettings(dropout=0.0), 3, 1.0,
                                  speed=SpeedOptions(lean_lora=True, compile_mode=mode))
        for p in trainable_parameters(model):  # non-zero B matrices: LoRA shows in the loss
            torch.nn.init.normal_(p, std=0.02)
        loss, n = sft_loss_sum(model, batch, chunk=16)
        (loss / n).backward()
        layers = model.get_base_model().model.layers
        assert all((layer._compiled_call_impl is not None) == (mode is not None) for layer in layers)
        results.append((loss.detach(), [p.grad for p in trainable_parameters(model)]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-4)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
