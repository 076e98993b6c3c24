"""Durable SFT checkpoints: written atomically, verified on load, the last few kept.

A checkpoint is a folder `checkpoints/step-000020/` holding the LoRA adapter tensors, the
optimizer and scheduler states, the RNG states and `state.json` (step, data position, loss
history, token and time totals, and each other file's size and sha256). It is written under a
temporary name (`.tmp-step-000020-<hex>`) in the same folder, every file fsync'd, the folder
fsync'd, then renamed to its final name and the parent fsync'd: a `step-*` folder is complete or
absent, whatever moment a `kill -9` or power cut strikes. Old checkpoints are renamed to
`.del-*` before they are removed, so a half-deleted one never carries a valid name either.
Leftover `.tmp-*`/`.del-*` folders are removed at the next start.

RNG states saved: Python's `random`, torch CPU and every CUDA device (when CUDA is initialised).
numpy's is not: nothing in the SFT phase draws from numpy.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from runner.store.atomic import fsync_dir
from runner.store.failpoints import crash_point

__all__ = [
    "Checkpoint",
    "capture_rng",
    "clean_leftovers",
    "complete_checkpoints",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

_NAME = re.compile(r"^step-(\d{6,})$")
_FILES = ("adapter.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt")


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, loaded."""

    path: Path
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    state: dict[str, Any]


def capture_rng() -> dict[str, Any]:
    """Every RNG state a training step may draw from (dropout, shuffles)."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the RNG states of `capture_rng`."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    # O_EXCL: the temporary folder is ours alone; never write through a stranger's file.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _step_of(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m and path.is_dir() else None


def _checkpoints(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if (s := _step_of(p)) is not None]
    return sorted(found)


def _remove(root: Path, path: Path) -> None:
    """Take `path` out of the valid names first (one atomic rename), then delete it."""
    doomed = root / f".del-{path.name}-{secrets.token_hex(4)}"
    os.rename(path, doomed)
    fsync_dir(root)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_leftovers(root: Path) -> list[str]:
    """Remove temporary and half-deleted folders a crash left behind; their names."""
    if not root.is_dir():
        return []
    gone = [p for p in root.iterdir() if p.name.startswith((".tmp-", ".del-"))]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True)
    if gone:
        fsync_dir(root)
    return sorted(p.name for p in gone)


def save_checkpoint(root: Path, step: int, adapter: dict[str, torch.Tensor],
                    optimizer: dict[str, Any], scheduler: dict[str, Any],
                    rng: dict[str, Any], state: dict[str, Any], keep: int = 2) -> Path:
    """Write checkpoint `step` atomically under `root`; keep the newest `keep`; its path."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    blobs = {
        "adapter.safetensors": save_safetensors(
            {k: v.detach().to("cpu").contiguous() for k, v in adapter.items()}),
        "optimizer.pt": _torch_bytes(optimizer),
        "scheduler.pt": _torch_bytes(scheduler),
        "rng.pt": _torch_bytes(rng),
    }
    manifest = {n: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()}
                for n, b in blobs.items()}
    state_bytes = json.dumps({**state, "step": step, "files": manifest}, indent=1,
                             sort_keys=True).encode() + b"\n"
    tmp = root / f".tmp-{name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    for n, b in blobs.items():
        _write_synced(tmp / n, b)
    _write_synced(tmp / "state.json", state_bytes)  # last: its manifest vouches for the rest
    fsync_dir(tmp)
    crash_point("sft.checkpoint.before_rename")
    final = root / name
    if final.exists():  # the same step saved again (a resumed run): replace it whole
        _remove(root, final)
    os.rename(tmp, final)
    fsync_dir(root)
    crash_point("sft.checkpoint.after_rename")
    for old in complete_checkpoints(root)[max(keep, 1):]:
        _remove(root, old)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Every complete checkpoint folder under `root`, newest first."""
    return [p for _, p in reversed(_checkpoints(root))]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under `root`, or None."""
    found = complete_checkpoints(root)
    return found[0] if found else None


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and verify (sizes and sha256 from state.json) one checkpoint folder."""
    state = json.loads((path / "state.json").read_text())
    blobs: dict[str, bytes] = {}
    for n in _FILES:
        data = (path / n).read_bytes()
        want = state["files"][n]
        if len(data) != want["bytes"] or hashlib.sha256(data).hexdigest() != want["sha256"]:
            raise ValueError(f"checkpoint {path}: {n} does not match its recorded sha256")
        blobs[n] = data

    def _load(n: str) -> Any:
        # weights_only: a checkpoint is data; loading it must never run code.
        return torch.load(io.BytesIO(blobs[n]), map_location="cpu", weights_only=True)

    return Checkpoint(path=path, adapter=load_safetensors(blobs["adapter.safetensors"]),
                      optimizer=_load("optimizer.pt"), scheduler=_load("scheduler.pt"),
                      rng=_load("rng.pt"), state=state)
