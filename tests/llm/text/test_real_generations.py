"""The classifier against 276 raw generations of a real model, labelled by hand.

`fixtures/real/real_generations.jsonl` (see its README): responses and instructions that
SmolLM2-135M wrote through the Stage-1 pilot, each labelled clean / runaway / token_limit /
leakage by reading it, without running the classifier. The model's own special tokens are
passed as the generation phases pass them.
"""

import json
from pathlib import Path

import pytest

from runner.llm.text.cleaning import classify
from runner.llm.text.templates import DEFAULT_TEMPLATES as T

FIXTURE = Path(__file__).resolve().parents[3] / "fixtures" / "real" / "real_generations.jsonl"
SPECIALS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")  # SmolLM2's special tokens


@pytest.fixture(scope="module")
def judged() -> list[tuple[dict, str]]:
    """(labelled row, classifier's class) for every row of the fixture."""
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]
    return [(r, classify(r["text"], r["stopped_by"], T, r["kind"], SPECIALS).cls) for r in rows]


def test_fixture_has_at_least_150_labelled_generations(judged):
    """Enough hand-labelled rows, each with a label and a reason."""
    assert len(judged) >= 150 and all(r["label"] and r["reason"] for r, _ in judged)


def test_classifier_agrees_with_at_least_97_percent(judged):
    """The classes match the hand labels on at least 97% of the rows."""
    agree = sum(r["label"] == got for r, got in judged)
    assert agree / len(judged) >= 0.97, [(r["id"], r["label"], got) for r, got in judged
                                         if r["label"] != got]


def test_never_calls_a_runaway_clean(judged):
    """No hand-labelled runaway is classed clean (a runaway may be classed token_limit)."""
    assert [r["id"] for r, got in judged if r["label"] == "runaway" and got == "clean"] == []


def test_markdown_question_runaways_are_caught(judged):
    """The `## Question:` / `## Instruction:` runaways of the issue are runaways now."""
    drift = [got for r, got in judged if r["label"] == "runaway" and "\n## " in r["text"]]
    assert drift and set(drift) == {"runaway"}
