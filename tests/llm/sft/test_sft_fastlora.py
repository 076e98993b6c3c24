"""The lean LoRA forward: the same loss and gradients as peft's, bit for bit; peft's fallbacks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from sfthelpers import TINY_BASE

from runner.llm.sft.data import DataPosition, DataStream, Example
from runner.llm.sft.fastlora import install_lean_lora
from runner.llm.sft.loss import sft_loss_sum
from runner.llm.sft.model import LoraSettings, SpeedOptions, load_for_training, trainable_parameters

CPU = torch.device("cpu")


def _batch() -> Any:
    examples = [Example(tuple(range(5, 5 + n)), n // 3) for n in (20, 31, 12, 40, 25, 17)]
    batch, _ = DataStream(examples, 0, 2, 64, True, pad_id=0).next(DataPosition())
    return batch


def _loss_and_grads(lora: LoraSettings, lean: bool, dtype: torch.dtype = torch.float32
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model = load_for_training(str(TINY_BASE), CPU, lora, 3, 0.5,
                              speed=SpeedOptions(lean_lora=lean))
    if dtype != torch.float32:  # the base in bf16, adapters float32: the CUDA recipe's dtypes
        for name, p in model.named_parameters():
            if "lora_" not in name:
                p.data = p.data.to(dtype)
    torch.manual_seed(5)  # the dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype != torch.float32):
        loss, n = sft_loss_sum(model, _batch(), chunk=16)
    (loss / n).backward()
    return loss.detach(), [p.grad.clone() for p in trainable_parameters(model)]


@pytest.mark.parametrize("alpha", [32.0, 24.0])
def test_lean_forward_equals_peft_bit_for_bit(alpha: float) -> None:
    """With dropout on, loss and every LoRA gradient equal peft's exactly (scaling 2 and 1.5)."""
    lora = LoraSettings(r=16, alpha=alpha, dropout=0.1)
    loss_a, grads_a = _loss_and_grads(lora, lean=False)
    loss_b, grads_b = _loss_and_grads(lora, lean=True)
    assert torch.equal(loss_a, loss_b)
    assert len(grads_a) == len(grads_b) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_lean_forward_equals_peft_under_bf16_autocast() -> None:
    """A bf16 base under bf16 autocast (the CUDA dtypes): loss and gradients equal peft's."""
    lora = LoraSettings(r=16, alpha=32.0, dropout=0.1)
    loss_a, grads_a = _loss_and_grads(lora, lean=False, dtype=torch.bfloat16)
    loss_b, grads_b = _loss_and_grads(lora, lean=True, dtype=torch.bfloat16)
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_install_covers_every_lora_linear_layer() -> None:
    """All 7 projections of each of the 4 decoder layers get the lean forward."""
    model = load_for_training(str(TINY_BASE), CPU, LoraSettings(), 0, 0.0,
                              speed=SpeedOptions(lean_lora=False))
    q_proj = model.get_base_model().model.layers[0].self_attn.q_proj
    assert "forward" not in vars(q_proj)
    assert install_lean_lora(model) == 28
    assert q_proj.forward.__func__.__name__ == "lean_lora_forward"


def test_lean_forward_is_the_default() -> None:
    """load_for_training installs the lean forward unless told not to."""
    model = load_for_training(str(TINY_BASE), CPU, LoraSettings(), 0, 0.0)
    down = model.get_base_model().model.layers[3].mlp.down_proj
    assert down.forward.__func__.__name__ == "lean_lora_forward"


def test_disabled_adapters_fall_back_to_the_base_model() -> None:
    """Under peft's disable_adapter() the lean forward gives the base model's output."""
    model = load_for_training(str(TINY_BASE), CPU, LoraSettings(), 0, 0.0,
                              speed=SpeedOptions(lean_lora=True)).eval()
    for p in trainable_parameters(model):  # a non-zero adapter, so "disabled" is visible
        torch.nn.init.normal_(p, std=0.5)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
        base = model.get_base_model()
        for layer in base.model.layers:  # peft's own forward, adapters disabled
            for m in layer.modules():
                if "forward" in vars(m):
                    del m.forward
        with model.disable_adapter():
            reference = model(input_ids=ids).logits
    assert torch.equal(plain, reference)
    assert not torch.equal(tuned, plain)
