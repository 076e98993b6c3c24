"""The `sft` phase reads an `export` phase's rows as it reads the records they came from."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from sfthelpers import make_records

from runner.errors import PhaseError
from runner.llm.sft.options import SftOptions
from runner.llm.sft.phase import _pairs
from runner.llm.stage1.export import kept_pairs, to_row
from runner.llm.text.prompts import templates_from


def _read(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    ctx = SimpleNamespace(phase="sft", params={"source": "src"}, input=lambda name: records)
    return _pairs(ctx, SftOptions(source="src"), templates_from(None, "sft"))[1]


def test_export_rows_train_on_the_same_examples() -> None:
    """The SFT examples of an export's rows equal those of the records it exported."""
    records = make_records(30)
    rows = [to_row(r) for r in kept_pairs(records)[0]]
    assert len(rows) < len(records) and _read(rows) == _read(records)


def test_rows_without_completion_are_refused() -> None:
    """Rows without a prompt and a completion give no example: the phase says so."""
    with pytest.raises(PhaseError, match="prompt and a completion"):
        _read([{"id": "x", "prompt": "only a prompt"}])
