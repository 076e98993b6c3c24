"""Property: every path from param_paths round-trips through get_path and set_path."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runner.spec import get_path, param_paths, set_path

keys = st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True)
leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
)
params_strategy = st.recursive(
    st.dictionaries(keys, leaves, max_size=4),
    lambda inner: st.dictionaries(keys, st.one_of(leaves, inner), max_size=4),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(params_strategy)
def test_paths_round_trip(params: dict[str, Any]) -> None:
    """For every path: setting its own value changes nothing, a new value reads back, input intact."""
    before = copy.deepcopy(params)
    for path in param_paths(params):
        assert set_path(params, path, get_path(params, path)) == params
        assert get_path(set_path(params, path, "NEW"), path) == "NEW"
    assert params == before
