"""Tests of `runner.store.atomic`: atomic replace, JSON format, exclusive creation."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runner.store.atomic import create_exclusive, makedirs_durable, write_atomic, write_json_atomic

# argv: folder, writer name, go-file. Waits for the go-file, then races for 30 names.
RACER = """
import os, sys, time
from runner.store.atomic import create_exclusive
folder, me, go = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.001)
wins = [i for i in range(30) if create_exclusive(os.path.join(folder, f"d{i}.json"), me.encode())]
print(" ".join(map(str, wins)))
"""


def test_write_atomic_replaces_content_and_leaves_no_temp(tmp_path: Path) -> None:
    """write_atomic over an existing file leaves only the new content and no temp file."""
    target = tmp_path / "state.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_json_atomic_sorts_keys_and_ends_with_newline(tmp_path: Path) -> None:
    """The JSON file has sorted keys, keeps non-ASCII text, ends with a newline, parses back."""
    target = tmp_path / "x.json"
    write_json_atomic(target, {"b": 1, "a": ["é", 2.5]})
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') and "é" in text
    assert json.loads(text) == {"a": ["é", 2.5], "b": 1}


def test_create_exclusive_keeps_the_first_writer(tmp_path: Path) -> None:
    """A second create_exclusive of one name returns False and leaves the first content."""
    target = tmp_path / "d.json"
    assert create_exclusive(target, b"first") is True
    assert create_exclusive(target, b"second") is False
    assert target.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["d.json"]


def test_create_exclusive_lets_exactly_one_of_two_racing_writers_win(
    tmp_path: Path, child_env: Any
) -> None:
    """Two processes racing for the same 30 names: each name has one winner, holding its data."""
    go = tmp_path / "go"
    racers = {
        name: subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), name, str(go)],
                               env=child_env(), stdout=subprocess.PIPE, text=True)
        for name in ("A", "B")
    }
    time.sleep(0.3)  # let both start and spin on the go-file
    go.touch()
    wins = {name: set(map(int, p.communicate(timeout=20)[0].split())) for name, p in racers.items()}
    assert wins["A"] | wins["B"] == set(range(30)) and not wins["A"] & wins["B"]
    for name, won in wins.items():
        assert all((tmp_path / f"d{i}.json").read_bytes() == name.encode() for i in won)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_makedirs_durable_creates_missing_parents(tmp_path: Path) -> None:
    """makedirs_durable creates every missing level and accepts an existing folder."""
    target = tmp_path / "a" / "b" / "c"
    makedirs_durable(target)
    makedirs_durable(target)
    assert target.is_dir()
