"""The tiled lm_head cross-entropy: the chunked loss's value and gradients, in tiles."""

from __future__ import annotations

import pytest
import torch

from runner.llm.sft.data import IGNORE
from runner.llm.sft.loss import chunked_loss_sum
from runner.llm.sft.tiled_loss import tiled_cross_entropy_sum


def _case(seed: int, vocab: int = 300, dim: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 20, dim, generator=g)
    labels = torch.randint(0, vocab, (3, 20), generator=g)
    labels[:, :5] = IGNORE
    head = torch.nn.Linear(dim, vocab, bias=False)
    torch.nn.init.normal_(head.weight, std=0.3, generator=g)
    return hidden, labels, head


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_tiled_loss_and_gradients_equal_the_chunked_ones(softcap: float | None) -> None:
    """Small tiles (7 x 64 over a vocabulary of 300): loss, hidden and lm_head gradients match."""
    results = []
    for tiled in (False, True):
        hidden, labels, head = _case(0)
        hidden.requires_grad_(True)
        if tiled:
            rows, cols = (labels[:, 1:] != IGNORE).nonzero(as_tuple=True)
            h = hidden.reshape(-1, hidden.shape[-1])[rows * hidden.shape[1] + cols]
            loss = tiled_cross_entropy_sum(h, labels[:, 1:][rows, cols], head, softcap, 7, 64)
        else:
            loss, _ = chunked_loss_sum(hidden, labels, head, 16, softcap)
        loss.backward()
        results.append((loss.detach(), hidden.grad, head.weight.grad))
    (la, ha, wa), (lb, hb, wb) = results
    torch.testing.assert_close(lb, la, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(hb, ha, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(wb, wa, rtol=1e-5, atol=1e-6)


def test_chunked_loss_takes_the_tiled_path_when_asked() -> None:
    """tiled=True gives the same (loss, count) as the chunked path, through the tiles."""
    hidden, labels, head = _case(1)
    plain = chunked_loss_sum(hidden, labels, head, 8)
    tiled = chunked_loss_sum(hidden, labels, head, 8, tiled=True)
    assert plain[1] == tiled[1] == int((labels[:, 1:] != IGNORE).sum())
    torch.testing.assert_close(tiled[0], plain[0], rtol=1e-6, atol=1e-4)


def test_tiled_loss_under_bf16_autocast_matches_the_chunked_one() -> None:
    """Under bf16 autocast both run the lm_head in bf16: the sums agree to bf16 rounding."""
    hidden, labels, head = _case(2, vocab=1000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, _ = chunked_loss_sum(hidden, labels, head, 16)
        tiled, _ = chunked_loss_sum(hidden, labels, head, 16, tiled=True)
    torch.testing.assert_close(tiled, plain, rtol=1e-5, atol=1e-3)
