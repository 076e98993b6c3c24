"""Device sampling: counter-based uniforms, exact nucleus, top-k candidates vs full sort."""

import pytest
import torch

from runner.llm.decoding.sampling import Sampler, nucleus_threshold, row_keys, uniforms


def nucleus_hf(logits: torch.Tensor, top_p: float) -> set[int]:
    """The tokens transformers' TopPLogitsWarper keeps (ascending sort, cumsum <= 1 - p)."""
    sorted_logits, order = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cum <= (1 - top_p)
    drop[-1] = False
    return set(order[~drop].tolist())


def test_uniforms_are_uniform_and_in_the_open_interval():
    """Hash uniforms over many steps: strictly inside (0, 1), mean 1/2, flat deciles."""
    keys = row_keys(list(range(1, 65)), torch.device("cpu"))
    u = torch.cat([uniforms(keys, torch.tensor([s])) for s in range(500)])
    deciles = torch.histc(u, bins=10, min=0.0, max=1.0) / u.numel()
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert torch.allclose(deciles, torch.full((10,), 0.1), atol=0.01)


def test_a_rows_uniform_depends_only_on_its_key_and_step():
    """Row streams are independent of the other rows (finished or not) and of the batch size."""
    keys = row_keys([11, 22, 33], torch.device("cpu"))
    step = torch.tensor([9])
    assert uniforms(keys, step)[1] == uniforms(keys[1:2], step)[0]


def test_draws_follow_the_renormalised_nucleus():
    """20,000 draws of the topk variant match the nucleus probabilities (transformers' set)."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.2, -1.0, -3.0]])
    s = Sampler(temperature=1.0, top_p=0.8, repetition_penalty=1.0, candidates=6)
    keys = row_keys([123], torch.device("cpu"))
    drawn = torch.cat([s.pick(logits, None, keys, torch.tensor([k]), "topk")[0]
                       for k in range(20000)])
    kept = sorted(nucleus_hf(logits[0], 0.8))
    want = torch.zeros(6)
    want[kept] = logits[0, kept].softmax(-1)
    assert torch.allclose(torch.bincount(drawn, minlength=6) / 20000.0, want, atol=0.012)


def test_topk_equals_sort_when_the_nucleus_fits():
    """Where no row misses, the topk variant draws exactly the sort variant's tokens."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 500, generator=g) * 4
    s = Sampler(temperature=0.7, top_p=0.9, repetition_penalty=1.0, candidates=100)
    keys = row_keys(list(range(64)), torch.device("cpu"))
    step = torch.tensor([3])
    fast, miss = s.pick(logits, None, keys, step, "topk")
    full, _ = s.pick(logits, None, keys, step, "sort")
    assert not miss.any() and torch.equal(fast, full)


def test_topk_flags_a_row_whose_nucleus_is_wider_than_k():
    """A flat row (nucleus of hundreds of tokens) is a miss for 16 candidates."""
    s = Sampler(temperature=1.0, top_p=0.9, repetition_penalty=1.0, candidates=16)
    logits = torch.stack([torch.zeros(500), torch.arange(500.0)])
    _, miss = s.pick(logits, None, row_keys([1, 2], torch.device("cpu")), torch.tensor([0]),
                     "topk")
    assert miss.tolist() == [True, False]


def test_repetition_penalty_matches_transformers_rule():
    """Seen tokens: positive logits divided, negative multiplied by the penalty."""
    s = Sampler(temperature=0.0, top_p=1.0, repetition_penalty=2.0)
    logits = torch.tensor([[4.0, -1.0, 3.0]])
    seen = torch.tensor([[0, 1, 0, 1]])  # repeated ids are penalised once
    assert s.penalise(logits, seen).tolist() == [[2.0, -2.0, 3.0]]


def nucleus_sorted(probs: torch.Tensor, top_p: float) -> set[int]:
    """The sort definition in float64 (descending, keep while the mass before < top_p), with
    the tie rule of `bisect`: every token equal to the last kept one is kept too."""
    p = probs.double()
    vals, _order = torch.sort(p, descending=True)
    before = vals.cumsum(0) - vals
    k = int((before < top_p).sum())
    return set(torch.nonzero(p >= vals[k - 1]).flatten().tolist())


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("ties", [False, True])
def test_bisect_threshold_keeps_the_sorted_nucleus(top_p, ties):
    """On 400 random rows (flat, peaked, with many exact ties) the bisection keeps exactly the
    sort's nucleus (ties with the boundary token all kept)."""
    g = torch.Generator().manual_seed(int(top_p * 100) + ties)
    scale = torch.tensor([0.05, 0.5, 2.0, 8.0]).repeat(100)[:, None]
    logits = torch.randn(400, 3000, generator=g) * scale
    if ties:
        logits = torch.randint(0, 12, (400, 3000), generator=g).float() * scale
    probs = logits.softmax(-1)
    keep = probs >= nucleus_threshold(probs, top_p)
    for r in range(400):
        got = set(torch.nonzero(keep[r]).flatten().tolist())
        if top_p < 1.0:
            assert got == nucleus_sorted(probs[r], top_p), r
        else:  # the float mass of everything may fall short of 1.0: then all are kept
            assert got >= nucleus_sorted(probs[r], 1.0 - 1e-6)


def test_bisect_draws_follow_the_renormalised_nucleus():
    """20,000 draws of the bisect variant match the nucleus probabilities."""
    logits = torch.tensor([[1.0, 2.0, -1.0, 1.5, -3.0, 0.2]])
    s = Sampler(temperature=1.0, top_p=0.8, repetition_penalty=1.0)
    keys = row_keys([123], torch.device("cpu"))
    drawn = torch.cat([s.pick(logits, None, keys, torch.tensor([k]), "bisect")[0]
                       for k in range(20000)])
    kept = sorted(nucleus_hf(logits[0], 0.8))
    want = torch.zeros(6)
    want[kept] = logits[0, kept].softmax(-1)
    assert torch.allclose(torch.bincount(drawn, minlength=6) / 20000.0, want, atol=0.012)


def test_bisect_never_draws_outside_the_nucleus_and_is_deterministic():
    """Every draw of 64 rows over 50 steps is a kept token, and the same again."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(64, 500, generator=g) * 3
    s = Sampler(temperature=0.7, top_p=0.9, repetition_penalty=1.0)
    keys = row_keys(list(range(64)), torch.device("cpu"))
    probs = (logits / 0.7).softmax(-1)
    keep = probs >= nucleus_threshold(probs, 0.9)
    for step in range(50):
        tok, miss = s.pick(logits, None, keys, torch.tensor([step]), "bisect")
        assert keep.gather(1, tok[:, None]).all() and not miss.any()
        assert torch.equal(tok, s.pick(logits, None, keys, torch.tensor([step]), "bisect")[0])
