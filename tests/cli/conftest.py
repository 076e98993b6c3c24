"""Fixtures of the end-to-end tests of the core (helpers: corehelpers.py).

Every test works in its own state dir under `tmp_path`. Starting a run costs a few seconds
(the manifest imports torch to name CUDA devices), so the runs several tests start from are
made once per session (`review_at_gate`, `review_at_iteration2`) and copied into each test's
own state dir (`copy_run`): a copied run folder is a real run folder, so `resume`, `decide`
and the rest act on it as on the original.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from corehelpers import DATA, cli, copy_run, decide, ok


@pytest.fixture(scope="session")
def review_at_gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir holding run `rv` of data/review.yaml, stopped at gate `review` in
    iteration 1 with the check `score.pass_rate >= 0.9` failing (copy it before changing)."""
    state = tmp_path_factory.mktemp("review-gate") / "state"
    ok(cli(state, "run", str(DATA / "review.yaml"), "--run-id", "rv"), 3)
    return state


@pytest.fixture(scope="session")
def review_at_iteration2(tmp_path_factory: pytest.TempPathFactory, review_at_gate: Path) -> Path:
    """Run `rv` after ITERATE with scoring.threshold=0.0: at gate `review` again in
    iteration 2 (the gate's max_iterations), every check passing (copy it before changing)."""
    state = copy_run(review_at_gate, tmp_path_factory.mktemp("review-iter2") / "state")
    decide(state, "rv", "review", "iterate", "--set", "scoring.threshold=0.0")
    ok(cli(state, "resume", "rv"), 3)
    return state


@pytest.fixture
def at_gate(review_at_gate: Path, tmp_path: Path) -> Path:
    """This test's own copy of `review_at_gate` (run `rv`)."""
    return copy_run(review_at_gate, tmp_path / "state")


@pytest.fixture
def at_iteration2(review_at_iteration2: Path, tmp_path: Path) -> Path:
    """This test's own copy of `review_at_iteration2` (run `rv`)."""
    return copy_run(review_at_iteration2, tmp_path / "state")
