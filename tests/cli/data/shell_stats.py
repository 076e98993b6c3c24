"""The shell phase of crash.yaml / pipeline.yaml: writes records.jsonl and metrics.json."""

import json
import os
from pathlib import Path

out = Path(os.environ["RUNNER_OUTPUT_DIR"])
seed = int(os.environ["RUNNER_SEED"])
records = [
    {"i": i, "salt": seed % 1000, "value": i * 10, "run_id": os.environ["RUNNER_RUN_ID"],
     "phase": os.environ["RUNNER_PHASE"], "iteration": int(os.environ["RUNNER_ITERATION"])}
    for i in range(3)
]
with open(out / "records.jsonl", "w", encoding="utf-8") as f:
    for r in records:
        f.write(json.dumps(r, sort_keys=True) + "\n")
(out / "metrics.json").write_text(json.dumps({"lines": len(records), "seed_mod": seed % 1000}))
# The whole RUNNER_* environment, for tests/cli/test_cli_contract.py (not a record: the
# output folder differs from run to run).
env = {k: v for k, v in os.environ.items() if k.startswith("RUNNER_") or k == "EXTRA_VALUE"}
(out / "env.json").write_text(json.dumps(env, sort_keys=True))
print("shell_stats done")
