"""The YAML loader: marks for keys and values, duplicate keys, syntax errors, safe types."""

from __future__ import annotations

import pytest

from runner.errors import SpecError
from runner.spec.yaml_marks import load_with_marks

TEXT = """\
a: 1
b:
  c: [x, {d: 2}]
"""


def test_key_marks_at_every_level() -> None:
    """Mapping keys get 1-based (line, col) marks at every depth, inside lists too."""
    _, marks = load_with_marks(TEXT, "f.yaml")
    assert marks.keys[("a",)] == (1, 1)
    assert marks.keys[("b", "c")] == (3, 3)
    assert marks.keys[("b", "c", 1, "d")] == (3, 11)


def test_value_marks_at_every_level() -> None:
    """Values, list items included, get 1-based marks."""
    _, marks = load_with_marks(TEXT, "f.yaml")
    assert marks.values[("a",)] == (1, 4)
    assert marks.values[("b", "c", 0)] == (3, 7)
    assert marks.values[("b", "c", 1, "d")] == (3, 14)


def test_plain_data() -> None:
    """The loaded data is plain dicts, lists and scalars."""
    data, _ = load_with_marks(TEXT, "f.yaml")
    assert data == {"a": 1, "b": {"c": ["x", {"d": 2}]}}


def test_missing_path_falls_back_to_parent() -> None:
    """A path not in the document is located at its nearest ancestor."""
    _, marks = load_with_marks(TEXT, "f.yaml")
    assert marks.value(("b", "nope")) == marks.value(("b",))


def test_duplicate_key_at_second_key() -> None:
    """A duplicate key is one problem at the second occurrence, naming the first line."""
    with pytest.raises(SpecError) as info:
        load_with_marks("a: 1\nb:\n  x: 1\n  x: 2\n", "f.yaml")
    (p,) = info.value.problems
    assert (p.file, p.line, p.col, p.path) == ("f.yaml", 4, 3, "b.x")
    assert "duplicate key 'x' (first at line 3)" in p.message


def test_syntax_error_is_one_problem_at_its_mark() -> None:
    """A YAML syntax error becomes one SpecProblem at the parser's mark."""
    with pytest.raises(SpecError) as info:
        load_with_marks("a: 1\nb:\n\tc: 2\n", "f.yaml")
    (p,) = info.value.problems
    assert (p.line, p.col) == (3, 1)
    assert p.message.startswith("YAML syntax error")


def test_unquoted_reference_in_flow_mapping_hints_quoting() -> None:
    """An unquoted ${...} inside {...} fails to parse with a hint to quote it."""
    with pytest.raises(SpecError) as info:
        load_with_marks("with: {n: ${params.n}}\n", "f.yaml")
    assert "must be quoted" in info.value.problems[0].message


def test_no_python_objects() -> None:
    """Python-object tags are refused, never constructed."""
    with pytest.raises(SpecError) as info:
        load_with_marks("a: !!python/object/apply:os.system ['true']\n", "f.yaml")
    assert info.value.problems[0].line == 1


def test_dates_stay_text() -> None:
    """A date-like value stays a string, so a spec always freezes to JSON."""
    data, _ = load_with_marks("day: 2024-01-31\n", "f.yaml")
    assert data == {"day": "2024-01-31"}


def test_merge_key_is_not_a_duplicate() -> None:
    """`<<: *base` then an explicit key overrides the merged one without a problem."""
    data, _ = load_with_marks("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert data["m"] == {"x": 1, "y": 3}


def test_empty_document_is_none() -> None:
    """An empty (or comment-only) document loads as None."""
    assert load_with_marks("# nothing\n", "f.yaml")[0] is None
