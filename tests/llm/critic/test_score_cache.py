"""The critic's score cache: one SQLite file per phase, batches, damage, runs of older versions."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.llm.critic import scoring as critic
from runner.llm.loading import loader
from runner.llm.stage1.phases import critic_filter

REPO = Path(__file__).resolve().parents[3]
PAIRS = [
    {"id": f"i{n}", "stage": "responses", "instruction": f"task {n}", "response": f"answer {n}",
     "keep": True, "class": "clean"}
    for n in range(5)
]
SCORE = critic.Score.from_logprobs(-1.0, -2.0)


def _raw_put(path: Path, key: str, value: Any) -> None:
    """Write a row behind the cache's back (as a bug or a damaged disk might)."""
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))


def _legacy_put(root: Path, key: str, score: critic.Score) -> None:
    """An entry as the per-file cache of earlier versions wrote it: root/ab/<key>.json."""
    (root / key[:2]).mkdir(parents=True, exist_ok=True)
    (root / key[:2] / f"{key}.json").write_text(json.dumps(score.as_dict()), encoding="utf-8")


def test_puts_of_a_batch_are_invisible_until_it_ends(tmp_path: Path) -> None:
    """Inside `batch()`, another reader of the file sees none of the scores; after it, all."""
    cache, reader = critic.ScoreCache(tmp_path), critic.ScoreCache(tmp_path)
    keys = [cache.key("m", f"p{i}", [" A", " B"]) for i in range(3)]
    with cache.batch():
        for k in keys:
            cache.put(k, SCORE)
        assert [reader.get(k) for k in keys] == [None] * 3
    assert [reader.get(k) for k in keys] == [SCORE] * 3


def test_batch_that_raises_stores_no_score(tmp_path: Path) -> None:
    """A scoring failure inside `batch()` leaves none of that batch's scores stored."""
    cache = critic.ScoreCache(tmp_path)
    with pytest.raises(RuntimeError), cache.batch():
        cache.put("a" * 64, SCORE)
        raise RuntimeError("forward failed")
    assert critic.ScoreCache(tmp_path).get("a" * 64) is None


@pytest.mark.parametrize("value", [
    {"logprob_a": -1.0, "logprob_b": -2.0, "p_a": 0.7},                     # a field missing
    {"logprob_a": -1.0, "logprob_b": -2.0, "p_a": "high", "margin": 1.0},   # not a number
    {"logprob_a": -1.0, "logprob_b": -2.0, "p_a": True, "margin": 1.0},     # a bool
])
def test_stored_value_that_is_not_a_score_reads_as_missing(tmp_path: Path, value: Any) -> None:
    """A row that parses but fails validation counts as missing (it will be scored again)."""
    cache = critic.ScoreCache(tmp_path)
    cache.put("k" * 64, SCORE)
    _raw_put(tmp_path / "scores.sqlite", "k" * 64, json.dumps(value))
    assert cache.get("k" * 64) is None


def test_old_per_file_entry_is_read(tmp_path: Path) -> None:
    """A score in the one-file-per-key layout of earlier versions is found."""
    key = critic.ScoreCache.key("m", "prompt", [" A", " B"])
    _legacy_put(tmp_path, key, SCORE)
    assert critic.ScoreCache(tmp_path).get(key) == SCORE


def test_damaged_old_per_file_entry_reads_as_missing(tmp_path: Path) -> None:
    """An old-layout file that is not valid JSON reads as None, as it did before."""
    key = critic.ScoreCache.key("m", "prompt", [" A", " B"])
    _legacy_put(tmp_path, key, SCORE)
    (tmp_path / key[:2] / f"{key}.json").write_text('{"logprob_a": -1.0, "logp', encoding="utf-8")
    assert critic.ScoreCache(tmp_path).get(key) is None


def test_each_shard_of_a_phase_has_its_own_file(tmp_path: Path) -> None:
    """`for_phase` gives an unsharded phase and each shard a file of its own under critic/."""
    names = [critic.ScoreCache.for_phase(tmp_path, "pc", shard)._kv.path for shard in (None, 0, 11)]
    assert [p.relative_to(tmp_path).as_posix() for p in names] == [
        "critic/pc.sqlite", "critic/pc.shard0000.sqlite", "critic/pc.shard0011.sqlite"]


PUT_TWO_BATCHES = """
import sys
from pathlib import Path
from runner.llm.critic.scoring import Score, ScoreCache
cache = ScoreCache(Path(sys.argv[1]))
for b in range(2):
    with cache.batch():
        for i in range(4):
            cache.put(f"{b}{i}".ljust(64, "0"), Score.from_logprobs(-1.0 - i, -2.0))
cache.close()
"""


def test_kill_before_commit_leaves_no_score_of_that_batch(tmp_path: Path) -> None:
    """SIGKILL at the 2nd batch's commit point: the 1st batch's 4 scores, none of the 2nd."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("RUNNER_CRASH_")}
    env["PYTHONPATH"] = str(REPO)
    # Points per run: 4 kv.row_written + kv.before_commit + kv.after_commit per batch.
    proc = subprocess.run([sys.executable, "-c", PUT_TWO_BATCHES, str(tmp_path)], timeout=120,
                          env={**env, "RUNNER_CRASH_AT": str(6 + 5)}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cache = critic.ScoreCache(tmp_path)
    got = [cache.get(f"{b}{i}".ljust(64, "0")) is not None for b in range(2) for i in range(4)]
    assert got == [True] * 4 + [False] * 4


@pytest.fixture
def lm(tiny_model: Path, fresh_loader: None) -> Any:
    """The tiny model, loaded."""
    return loader.load_model({"path": str(tiny_model)})


def test_invalid_entry_is_scored_again_and_repaired(tmp_path: Path, lm: Any) -> None:
    """`score_cached` treats an invalid row as a miss, runs a forward, and overwrites it."""
    cache = critic.ScoreCache(tmp_path)
    ids = lm.encode(["Sing.", "Count."])
    labels = critic.label_token_ids(lm.tokenizer, [" A", " B"], "c")
    keys = [cache.key("m", p, [" A", " B"]) for p in ("Sing.", "Count.")]
    first, _ = critic.score_cached(cache, keys, ids, labels, lambda: lm)
    _raw_put(tmp_path / "scores.sqlite", keys[0], "{broken")
    before = critic.forward_calls()
    again, hits = critic.score_cached(cache, keys, ids, labels, lambda: lm)
    assert (hits, critic.forward_calls() - before, cache.get(keys[0]) is not None) == (1, 1, True)
    assert again[0].p_a == pytest.approx(first[0].p_a, abs=1e-6)


def _to_old_layout(cache_root: Path, db: Path) -> int:
    """Rewrite a phase's SQLite cache as the per-file cache of earlier versions; remove it."""
    with sqlite3.connect(db) as conn:
        rows = list(conn.execute("SELECT key, value FROM kv"))
    for key, value in rows:
        (cache_root / key[:2]).mkdir(parents=True, exist_ok=True)
        (cache_root / key[:2] / f"{key}.json").write_text(value, encoding="utf-8")
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    return len(rows)


def test_critic_phase_leaves_one_cache_file(local_run: Any, fresh_loader: None) -> None:
    """After a critic phase, its scores are one file, cache/critic/<phase>.sqlite."""
    local_run.add_records("src", PAIRS)
    local_run.run("pc", critic_filter, {"source": "src"})
    files = sorted(p.name for p in (local_run.root / "cache" / "critic").iterdir())
    assert files == ["pc.sqlite"]


def test_resume_of_a_run_with_the_old_per_file_cache_scores_nothing(local_run: Any,
                                                                   fresh_loader: None) -> None:
    """Scores left by an earlier version (one file each) are hits: no model, no forward."""
    local_run.add_records("src", PAIRS)
    local_run.run("pc", critic_filter, {"source": "src", "confidence_threshold": 0.0})
    root = local_run.root / "cache" / "critic"
    assert _to_old_layout(root, root / "pc.sqlite") == 20  # 5 items, 5 probe items; both label orders
    loader.clear_models()
    loads, forwards = loader.load_count(), critic.forward_calls()
    again = local_run.run("pc", critic_filter, {"source": "src", "confidence_threshold": 1.0},
                          iteration=2)
    assert (loader.load_count() - loads, critic.forward_calls() - forwards) == (0, 0)
    assert (again["cache_hits"], again["cache_misses"]) == (5, 0)


def test_damaged_database_is_set_aside_and_every_item_scored_again(local_run: Any,
                                                                  fresh_loader: None) -> None:
    """A critic cache file that is not a database: moved aside, all 5 items scored afresh."""
    local_run.add_records("src", PAIRS)
    local_run.run("pc", critic_filter, {"source": "src"})
    db = local_run.root / "cache" / "critic" / "pc.sqlite"
    db.write_bytes(b"\x13garbage" * 512)
    again = local_run.run("pc", critic_filter, {"source": "src", "confidence_threshold": 1.0},
                          iteration=2)
    aside = [p.name for p in db.parent.iterdir() if ".damaged-" in p.name]
    assert (again["cache_hits"], again["cache_misses"], len(aside)) == (0, 5, 1)
