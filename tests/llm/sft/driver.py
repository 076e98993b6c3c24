"""Run the `sft` phase in this process with a real `PhaseContext`, as the engine builds it.

Usage: python driver.py RUN_DIR RECORDS_JSONL PARAMS_JSON

The records file stands for the output of an earlier phase named `pairs`; the phase instance
folder is RUN_DIR/phases/sft.i1. Log lines go to RUN_DIR/log.jsonl (one JSON object each).
`SFT_TEST_STEP_DELAY` (seconds) makes each `sft_step` log line sleep, so a test can kill the
process between two steps; it changes timing only, never what is computed. The metrics are
printed as one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from runner.phases.context import PhaseContext

REPO = Path(__file__).resolve().parents[3]


class JsonLog:
    """A structlog-like logger writing one flushed JSON line per event."""

    def __init__(self, path: Path, delay: float) -> None:
        self.file = open(path, "a", encoding="utf-8")
        self.delay = delay

    def _emit(self, level: str, event: str, **kw: Any) -> None:
        self.file.write(json.dumps({"level": level, "event": event, **kw}, default=str) + "\n")
        self.file.flush()
        if event == "sft_step" and self.delay:
            time.sleep(self.delay)

    def debug(self, event: str, **kw: Any) -> None:
        self._emit("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._emit("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._emit("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._emit("error", event, **kw)


def main() -> None:
    run_dir, records_file, params = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    torch.set_num_threads(1)  # the same arithmetic in every process that is compared
    records = [json.loads(line) for line in records_file.read_text().splitlines() if line]
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = PhaseContext(
        run_id="sft-test", phase="sft", iteration=1, run_seed=1234, params=params,
        output_dir=run_dir / "phases" / "sft.i1", run_dir=run_dir, cache_dir=run_dir / "cache",
        spec_dir=REPO, spec_sha256="0" * 64, git_commit=None,
        model_spec={"path": "fixtures/tiny-base", "device": "cpu"},
        log=JsonLog(run_dir / "log.jsonl", float(os.environ.get("SFT_TEST_STEP_DELAY", "0"))),
        read_input=lambda name: records if name == "pairs" else [], input_names=["pairs"],
    )
    from runner.llm.sft.phase import sft

    metrics = sft(ctx)
    ctx.finish_records()
    print(json.dumps(metrics, sort_keys=True))


if __name__ == "__main__":
    main()
