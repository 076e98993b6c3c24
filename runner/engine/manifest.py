"""The provenance manifest written once when a run starts.

It answers "which code, which libraries, which machine and which spec made this run" without
asking the user: git commit and dirty flag of the spec's repository, Python and package
versions, CUDA and GPU names where present, host, and the spec's sha256.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "build_manifest", "git_state"]

PACKAGES = (
    "runner", "torch", "transformers", "tokenizers", "safetensors", "peft", "bitsandbytes",
    "accelerate", "pydantic", "structlog", "tenacity", "pyyaml",
)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(folder: Path) -> dict[str, Any]:
    """Commit and dirty flag of the repository holding `folder`, or nulls outside one."""
    commit = _git(["rev-parse", "HEAD"], folder)
    if commit is None:
        return {"commit": None, "dirty": None, "root": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], folder)
    return {
        "commit": commit,
        "dirty": bool(status),
        "root": _git(["rev-parse", "--show-toplevel"], folder),
    }


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _cuda() -> dict[str, Any]:
    """CUDA build and visible GPUs, without importing torch (1-3 s) for a run that may not
    use it: torch is asked only if already imported, else `nvidia-smi` names the GPUs and the
    torch version string (`2.11.0+cu130`) tells the CUDA build."""
    torch = sys.modules.get("torch")
    if torch is not None:
        available = bool(torch.cuda.is_available())
        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
        return {"available": available, "version": torch.version.cuda, "gpus": gpus}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=False)
        gpus = [g.strip() for g in out.stdout.splitlines() if g.strip()] if out.returncode == 0 else []
    except (OSError, subprocess.SubprocessError):
        gpus = []
    return {"available": bool(gpus), "version": None, "gpus": gpus}


def build_manifest(run_id: str, spec_sha256: str, spec_dir: Path) -> dict[str, Any]:
    """Everything that identifies where and with what this run was started."""
    return {
        "run_id": run_id,
        "spec_sha256": spec_sha256,
        "git": git_state(spec_dir),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "packages": _versions(),
        "cuda": _cuda(),
        "argv": sys.argv,
    }
