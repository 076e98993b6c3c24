"""Tokenising, labelling and packing of SFT examples (tiny-base tokenizer, real pairs)."""

from __future__ import annotations

import json
import random
from typing import Any

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sfthelpers import make_records

from runner.llm.sft.data import (
    IGNORE,
    MAX_DEFERRED,
    DataPosition,
    DataStream,
    Example,
    collate,
    tokenize_pairs,
)
from runner.llm.text.sft_format import sft_example
from runner.llm.text.templates import DEFAULT_TEMPLATES


def _examples(tokenizer: Any, n: int, max_len: int = 128) -> list[Any]:
    pairs = [sft_example(r["instruction"], r["response"], DEFAULT_TEMPLATES)
             for r in make_records(n)]
    return tokenize_pairs(tokenizer, pairs, max_len)[0]


def test_loss_mask_covers_only_response_tokens(tokenizer: Any) -> None:
    """Labels are -100 on every prompt token; the labelled tokens decode to response + end + EOS."""
    prompt, completion = sft_example("Give me three colors.", "1. Red 2. Blue 3. Green",
                                     DEFAULT_TEMPLATES)
    (ex,), _, _ = tokenize_pairs(tokenizer, [(prompt, completion)], 128)
    batch = collate([[ex]], tokenizer.pad_token_id)
    labels = batch.labels[0].tolist()
    assert all(x == IGNORE for x in labels[: ex.n_prompt])
    assert labels[ex.n_prompt :] == list(ex.input_ids[ex.n_prompt :])
    labelled = [x for x in labels if x != IGNORE]
    assert tokenizer.decode(labelled) == completion + tokenizer.eos_token
    assert tokenizer.decode(list(ex.input_ids[: ex.n_prompt]), skip_special_tokens=True) == prompt


def test_packed_positions_restart_at_every_example(tokenizer: Any) -> None:
    """In a packed row, position ids restart at 0 where each example begins."""
    examples = _examples(tokenizer, 12)
    batch = collate([examples[:3]], tokenizer.pad_token_id)
    starts = [0, len(examples[0]), len(examples[0]) + len(examples[1])]
    positions = batch.position_ids[0].tolist()
    assert [positions[s] for s in starts] == [0, 0, 0]
    assert positions[starts[1] - 1] == len(examples[0]) - 1


def test_pad_tokens_carry_no_loss(tokenizer: Any) -> None:
    """Right-padded positions get the pad id and label -100, and count as no real token."""
    examples = _examples(tokenizer, 4)
    batch = collate([[examples[0]], [examples[1]]], tokenizer.pad_token_id)
    short = min(0, 1, key=lambda r: len(examples[r]))
    n = len(examples[short])
    assert batch.input_ids.shape[1] > n or len(examples[0]) == len(examples[1])
    assert (batch.labels[short, n:] == IGNORE).all()
    assert batch.real_tokens == len(examples[0]) + len(examples[1])


def test_packing_fills_rows_without_exceeding_max_len(tokenizer: Any) -> None:
    """Packed micro-batches hold several examples per row, none longer than max_seq_len."""
    stream = DataStream(_examples(tokenizer, 40), seed=3, batch_size=2, max_seq_len=128,
                        packing=True, pad_id=tokenizer.pad_token_id)
    batch, _ = stream.next(DataPosition())
    assert all(sum(row) <= 128 for row in batch.segments)
    assert max(len(row) for row in batch.segments) > 1


def test_stream_is_a_pure_function_of_seed_and_position(tokenizer: Any) -> None:
    """Two streams with one seed give equal micro-batches at one position; another seed differs."""
    examples = _examples(tokenizer, 40)
    a = DataStream(examples, 3, 2, 128, True, tokenizer.pad_token_id)
    b = DataStream(examples, 3, 2, 128, True, tokenizer.pad_token_id)
    c = DataStream(examples, 4, 2, 128, True, tokenizer.pad_token_id)
    pos = DataPosition(1, 5)
    assert a.next(pos)[0].input_ids.equal(b.next(pos)[0].input_ids)
    assert a.next(pos)[1] == b.next(pos)[1]
    assert not a.next(DataPosition())[0].input_ids.equal(c.next(DataPosition())[0].input_ids)


def test_too_long_prompt_is_skipped_and_long_response_truncated(tokenizer: Any) -> None:
    """A prompt filling max_seq_len is skipped; a long response is cut to fit."""
    long_prompt = sft_example("word " * 200, "ok", DEFAULT_TEMPLATES)
    long_answer = sft_example("Say a lot.", "word " * 200, DEFAULT_TEMPLATES)
    examples, skipped, truncated = tokenize_pairs(tokenizer, [long_prompt, long_answer], 64)
    assert (skipped, truncated) == (1, 1)
    assert len(examples[0]) == 64


def _tagged(lengths: list[int]) -> list[Example]:
    """Example i is `lengths[i]` copies of token i + 5: its tokens say which example it is."""
    return [Example((i + 5,) * n, 1) for i, n in enumerate(lengths)]


def _epoch(stream: DataStream) -> tuple[list[Any], list[DataPosition]]:
    batches, positions, pos = [], [], DataPosition()
    while pos.epoch == 0:
        batch, pos = stream.next(pos)
        batches.append(batch)
        positions.append(pos)
    return batches, positions


def _pad_per_real(batches: list[Any]) -> float:
    real = sum(b.real_tokens for b in batches)
    return sum(b.input_ids.numel() for b in batches) / real - 1


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 70), min_size=1, max_size=60), st.integers(1, 6))
def test_best_fit_takes_every_example_once_within_the_rows(lengths: list[int], rows: int) -> None:
    """Best fit: each example once per epoch, whole; rows <= batch size, <= max length."""
    stream = DataStream(_tagged(lengths), 1, rows, 64, True, 0, best_fit=True)
    batches, positions = _epoch(stream)
    counts: dict[int, int] = {}
    for b in batches:
        assert b.input_ids.shape[0] <= rows
        assert all(sum(seg) <= max(64, max(lengths)) for seg in b.segments)
        for token in b.input_ids[b.input_ids != 0].tolist():
            counts[token - 5] = counts.get(token - 5, 0) + 1
    assert counts == {i: n for i, n in enumerate(lengths)}
    assert all(len(p.deferred) <= MAX_DEFERRED for p in positions)


def test_best_fit_pads_less_than_first_fit() -> None:
    """On lengths uniform in 16-128 packed into 8 rows of 128, best fit pads far less."""
    r = random.Random(0)
    examples = _tagged([r.randint(16, 128) for _ in range(400)])
    first = _pad_per_real(_epoch(DataStream(examples, 2, 8, 128, True, 0))[0])
    best = _pad_per_real(_epoch(DataStream(examples, 2, 8, 128, True, 0, best_fit=True))[0])
    assert best < 0.7 * first


def test_best_fit_resumes_from_a_saved_position() -> None:
    """A position through as_dict/from_dict (a checkpoint) gives the same next micro-batches."""
    r = random.Random(1)
    examples = _tagged([r.randint(16, 128) for _ in range(200)])
    stream = DataStream(examples, 3, 8, 128, True, 0, best_fit=True)
    batches, positions = _epoch(stream)
    at = next(k for k, p in enumerate(positions) if p.deferred)  # one with put-off examples
    restored = DataPosition.from_dict(json.loads(json.dumps(positions[at].as_dict())))
    again = DataStream(examples, 3, 8, 128, True, 0, best_fit=True)
    batch, _ = again.next(restored)
    assert torch.equal(batch.input_ids, batches[at + 1].input_ids)


def test_positions_of_old_checkpoints_load_without_deferred() -> None:
    """A checkpoint's position written before `deferred` existed loads with none."""
    assert DataPosition.from_dict({"epoch": 2, "cursor": 7}) == DataPosition(2, 7)


def test_fixed_width_pads_every_micro_batch_to_max_seq_len() -> None:
    """fixed_width: every micro-batch is max_seq_len wide; the extra columns carry no loss."""
    r = random.Random(2)
    examples = _tagged([r.randint(5, 40) for _ in range(50)])
    plain = _epoch(DataStream(examples, 0, 4, 128, True, 0))[0]
    fixed = _epoch(DataStream(examples, 0, 4, 128, True, 0, fixed_width=True))[0]
    assert {b.input_ids.shape[1] for b in fixed} == {128}
    assert [b.label_tokens for b in fixed] == [b.label_tokens for b in plain]
    assert [b.real_tokens for b in fixed] == [b.real_tokens for b in plain]
