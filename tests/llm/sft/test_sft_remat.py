"""Recomputed norms and MLP activation: the same loss and gradients, less kept for backward."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from sfthelpers import TINY_BASE

from runner.llm.sft.data import DataPosition, DataStream, Example
from runner.llm.sft.loss import sft_loss_sum
from runner.llm.sft.model import LoraSettings, SpeedOptions, load_for_training, trainable_parameters
from runner.llm.sft.remat import install_remat

CPU = torch.device("cpu")


def _batch() -> Any:
    examples = [Example(tuple(range(5, 5 + n)), n // 3) for n in (20, 31, 12, 40, 25, 17)]  # ids < 64
    return DataStream(examples, 0, 2, 64, True, pad_id=0).next(DataPosition())[0]


@pytest.fixture(scope="module")
def wide_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama with the 1B model's proportions (MLP 4x hidden) and a tiny vocab,
    so the layers, not the loss, hold what backward keeps."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    path = tmp_path_factory.mktemp("wide") / "model"
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def _run(remat: bool, autocast: bool, path: Path = TINY_BASE
         ) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """(loss, LoRA gradients, bytes the forward left allocated for backward) of one step.

    The base is cast to bf16 under autocast, as on CUDA; the bytes are the CPU profiler's net
    allocation over the forward (what autograd keeps until backward frees it).
    """
    from torch.profiler import ProfilerActivity, profile

    model = load_for_training(str(path), CPU, LoraSettings(dropout=0.1), 3, 0.0,
                              speed=SpeedOptions(remat=remat))
    for name, p in model.named_parameters():
        if autocast and "lora_" not in name:
            p.data = p.data.to(torch.bfloat16)
    for p in trainable_parameters(model):  # non-zero B: the adapters shape the loss
        torch.nn.init.normal_(p, std=0.05)
    batch = _batch()
    torch.manual_seed(5)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, n = sft_loss_sum(model, batch, chunk=16)
    kept = sum(e.self_cpu_memory_usage for e in prof.events())
    (loss / n).backward()
    return loss.detach(), [p.grad.clone() for p in trainable_parameters(model)], kept


@pytest.mark.parametrize("autocast", [False, True])
def test_remat_gives_the_same_loss_and_gradients(autocast: bool) -> None:
    """Float32 and bf16 autocast: loss and every LoRA gradient equal bit for bit."""
    loss_a, grads_a, _ = _run(False, autocast)
    loss_b, grads_b, _ = _run(True, autocast)
    assert torch.equal(loss_a, loss_b)
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b))


def test_remat_keeps_less_for_backward(wide_mlp: Path) -> None:
    """Under bf16 autocast, the forward leaves less allocated for backward (here ~10% less: on
    CPU peft keeps float32 copies of every LoRA input, which the 4-bit CUDA path does not)."""
    _, _, plain = _run(False, True, wide_mlp)
    _, _, remat = _run(True, True, wide_mlp)
    assert remat < 0.95 * plain


def test_install_wraps_both_norms_and_the_mlp_of_every_layer() -> None:
    """4 layers x (2 norms + 1 MLP) + the final norm = 13 modules."""
    model = load_for_training(str(TINY_BASE), CPU, LoraSettings(), 0, 0.0)
    assert install_remat(model.get_base_model().get_decoder()) == 13


@pytest.mark.slow
def test_compiled_parts_give_the_eager_loss_and_gradients() -> None:
    """compile_mode "parts" (norms and MLP activation compiled): eager's loss and gradients."""
    results = []
    for mode in (None, "parts"):
        model = load_for_training(str(TINY_BASE), CPU, LoraSettings(dropout=0.0), 3, 1.0,
                                  speed=SpeedOptions(remat=True, compile_mode=mode))
        for p in trainable_parameters(model):
            torch.nn.init.normal_(p, std=0.05)
        loss, n = sft_loss_sum(model, _batch(), chunk=16)
        (loss / n).backward()
        results.append((loss.detach(), [p.grad for p in trainable_parameters(model)]))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-4)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
