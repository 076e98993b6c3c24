"""The shipped evaluation set `fixtures/eval/` and the script that builds it."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from evalhelpers import EVAL_DIR, REPO

from runner.llm.evaluation.verifiable import CHECKERS, check, validate_args

SCRIPT = REPO / "scripts" / "build_eval_set.py"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


ITEMS = _rows(EVAL_DIR / "verifiable.jsonl")
FEWSHOT = _rows(EVAL_DIR / "fewshot.jsonl")


def _build(out: Path, hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, env=env,
                   capture_output=True)


def test_set_has_at_least_240_items():
    """The set holds at least 240 items."""
    assert len(ITEMS) >= 240


def test_items_have_the_four_keys():
    """Each item is exactly {id, instruction, checker, args}."""
    assert {tuple(sorted(it)) for it in ITEMS} == {("args", "checker", "id", "instruction")}


def test_ids_are_unique():
    """No two items share an id."""
    assert len({it["id"] for it in ITEMS}) == len(ITEMS)


def test_instructions_are_unique():
    """No two items share an instruction."""
    assert len({it["instruction"] for it in ITEMS}) == len(ITEMS)


def test_checkers_are_spread_evenly():
    """Every checker is represented, each by the same number of items."""
    counts = Counter(it["checker"] for it in ITEMS)
    assert sorted(counts) == sorted(CHECKERS) and len(set(counts.values())) == 1


def test_every_prefix_of_twelve_covers_every_checker():
    """The items are listed round-robin, so the first 12 (a small `limit`) hold each checker."""
    assert sorted(it["checker"] for it in ITEMS[:12]) == sorted(CHECKERS)


def test_every_item_has_valid_args():
    """Each item's args are exactly its checker's parameters, of the right types."""
    for it in ITEMS:
        validate_args(it["checker"], it["args"])


def test_regenerating_gives_identical_bytes(tmp_path):
    """The script writes byte-identical files to the shipped ones."""
    _build(tmp_path, "0")
    assert [(tmp_path / n).read_bytes() == (EVAL_DIR / n).read_bytes()
            for n in ("verifiable.jsonl", "fewshot.jsonl")] == [True, True]


def test_regenerating_ignores_hash_seed(tmp_path):
    """Two builds under different PYTHONHASHSEEDs write the same bytes."""
    _build(tmp_path / "a", "1")
    _build(tmp_path / "b", "2")
    assert (tmp_path / "a" / "verifiable.jsonl").read_bytes() == (
        tmp_path / "b" / "verifiable.jsonl").read_bytes()


def test_fewshot_responses_pass_their_checkers():
    """Each few-shot example shows a response that passes its own checker."""
    assert [check(e["checker"], e["response"], e["args"]) for e in FEWSHOT] == [True] * len(
        FEWSHOT)


def test_fewshot_covers_every_checker():
    """The few-shot file holds one example per checker."""
    assert sorted(e["checker"] for e in FEWSHOT) == sorted(CHECKERS)


def test_fewshot_instructions_are_not_in_the_set():
    """No few-shot instruction is an evaluation item (no answer leaks into the prompt)."""
    assert {e["instruction"] for e in FEWSHOT} & {it["instruction"] for it in ITEMS} == set()
