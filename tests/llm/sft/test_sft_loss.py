"""Packing isolation and the chunked loss, against the plain transformers loss (tiny-base)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from sfthelpers import make_records

from runner.llm.sft.data import collate, tokenize_pairs
from runner.llm.sft.loss import per_token_losses, sft_loss_sum
from runner.llm.text.sft_format import sft_example
from runner.llm.text.templates import DEFAULT_TEMPLATES


def _examples(tokenizer: Any, n: int) -> list[Any]:
    pairs = [sft_example(r["instruction"], r["response"], DEFAULT_TEMPLATES)
             for r in make_records(n, seed=11)]
    return tokenize_pairs(tokenizer, pairs, 128)[0]


def _lora_model(base_model: Any) -> Any:
    """The tiny model with LoRA on all linear layers, every LoRA weight non-zero."""
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear")
    model = get_peft_model(copy.deepcopy(base_model), config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:  # B starts at zero: make every gradient path non-trivial
                p.copy_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_packed_batch_gives_each_example_its_unpacked_loss(tokenizer: Any,
                                                           base_model: Any) -> None:
    """Per-example losses of one packed row equal those of each example run alone."""
    examples = _examples(tokenizer, 4)
    packed = collate([examples], tokenizer.pad_token_id)
    assert packed.input_ids.shape[0] == 1 and len(packed.segments[0]) == 4
    row = per_token_losses(base_model, packed)[0]
    at = 0
    for ex in examples:
        alone = per_token_losses(base_model, collate([[ex]], tokenizer.pad_token_id))[0]
        assert torch.allclose(row[at : at + len(ex)].sum(), alone.sum(), rtol=1e-5, atol=1e-5)
        at += len(ex)


def test_packed_row_without_position_restarts_would_leak(tokenizer: Any,
                                                        base_model: Any) -> None:
    """Control: the same packed row with one 0..n position run mixes examples (losses change)."""
    examples = _examples(tokenizer, 4)
    packed = collate([examples], tokenizer.pad_token_id)
    width = packed.input_ids.shape[1]
    leaky = dataclasses.replace(packed, position_ids=torch.arange(width).unsqueeze(0))
    second = slice(len(examples[0]), len(examples[0]) + len(examples[1]))
    alone = per_token_losses(base_model, collate([[examples[1]]], tokenizer.pad_token_id))[0]
    assert not torch.allclose(per_token_losses(base_model, leaky)[0][second].sum(), alone.sum(),
                              rtol=1e-3)


def test_chunked_loss_equals_plain_model_loss(tokenizer: Any, base_model: Any) -> None:
    """sum/n of the chunked loss (chunks of 7 tokens) equals model(..., labels=).loss."""
    model = _lora_model(base_model)
    batch = collate([[e] for e in _examples(tokenizer, 6)], tokenizer.pad_token_id)
    plain = model(input_ids=batch.input_ids, labels=batch.labels).loss
    loss_sum, n = sft_loss_sum(model, batch, chunk=7)
    assert n == batch.label_tokens > 7
    assert torch.allclose(loss_sum / n, plain, rtol=1e-5, atol=1e-6)


def test_chunked_loss_gradients_equal_plain_gradients(tokenizer: Any, base_model: Any) -> None:
    """The LoRA gradients of the chunked loss equal those of the plain model loss."""
    model = _lora_model(base_model)
    batch = collate([[e] for e in _examples(tokenizer, 6)], tokenizer.pad_token_id)
    model(input_ids=batch.input_ids, labels=batch.labels).loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    loss_sum, n = sft_loss_sum(model, batch, chunk=7)
    (loss_sum / n).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert torch.allclose(p.grad, plain[name], rtol=1e-4, atol=1e-7), name


@pytest.mark.parametrize("chunk", [1, 1024])
def test_chunk_size_does_not_change_the_loss(tokenizer: Any, base_model: Any,
                                             chunk: int) -> None:
    """One token per chunk and one chunk for all tokens give the same loss sum."""
    batch = collate([[e] for e in _examples(tokenizer, 3)], tokenizer.pad_token_id)
    reference, _ = sft_loss_sum(base_model, batch, chunk=5)
    loss_sum, _ = sft_loss_sum(base_model, batch, chunk=chunk)
    assert torch.allclose(loss_sum, reference, rtol=1e-5)
