"""`bench_sft.py --profile`: a torch.profiler window over 2 steps after warm-up, as a table.

The window opens after a device synchronisation at the end of the last warm-up step and closes
after one at the end of the second profiled step, so its wall time is the two steps' wall
time. The summary says where the time goes: the top ops by self CUDA time (self CPU time on
CPU), how many ops the host dispatched and how many kernels it launched per step, and the
step's wall time against the time the GPU was busy (the union of every kernel, copy and set
interval): a GPU busy for a small part of the wall is waiting on the host.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

__all__ = ["ProfileWindow"]

STEPS = 2
TOP = 25
TOP_HOST = 15


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of [start, end) intervals (microseconds)."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e <= end:
            continue
        total += e - max(s, end)
        end = e
    return total


class ProfileWindow:
    """Open with `start()` after warm-up, close with `stop()` after STEPS steps; `write()`."""

    def __init__(self, loop: str, device: torch.device) -> None:
        self.loop, self.device = loop, device
        activities = [ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        self._prof = profile(activities=activities, record_shapes=False, with_stack=False)
        self.wall_s = 0.0
        self._t0 = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        self._sync()
        self._prof.__enter__()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self._sync()
        self.wall_s = time.perf_counter() - self._t0
        self._prof.__exit__(None, None, None)

    def summary(self) -> dict[str, Any]:
        events = self._prof.events()
        cuda = self.device.type == "cuda"
        device_events = [e for e in events if e.device_type.name == "CUDA"]
        busy_us = _union_us([(e.time_range.start, e.time_range.end) for e in device_events])
        kernels = sum(1 for e in device_events if not e.name.startswith("Memcpy")
                      and not e.name.startswith("Memset"))
        aten = [e for e in events if e.device_type.name == "CPU" and e.name.startswith("aten::")]
        top_level = [e for e in aten if e.cpu_parent is None
                     or not e.cpu_parent.name.startswith("aten::")]
        syncs = sum(1 for e in events if e.name in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                      "cudaEventSynchronize"))
        scalars = sum(1 for e in events if e.name == "aten::_local_scalar_dense")
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        rows = []
        for avg in sorted(self._prof.key_averages(), key=lambda a: getattr(a, key), reverse=True)[:TOP]:
            rows.append({"op": avg.key, "calls": avg.count,
                         "self_ms": getattr(avg, key) / 1e3,
                         "self_cpu_ms": avg.self_cpu_time_total / 1e3})
        host = []
        if cuda:  # where the host's time goes, op by op (dispatch, Python-side work)
            for avg in sorted(self._prof.key_averages(), key=lambda a: a.self_cpu_time_total,
                              reverse=True)[:TOP_HOST]:
                host.append({"op": avg.key, "calls": avg.count,
                             "self_cpu_ms": avg.self_cpu_time_total / 1e3})
        return {"loop": self.loop, "top_host_ops": host, "steps": STEPS, "wall_s_per_step": self.wall_s / STEPS,
                "gpu_busy_s_per_step": busy_us / 1e6 / STEPS if cuda else None,
                "kernels_per_step": kernels / STEPS, "aten_ops_per_step": len(aten) / STEPS,
                "top_level_aten_ops_per_step": len(top_level) / STEPS,
                "syncs_per_step": syncs / STEPS, "scalar_reads_per_step": scalars / STEPS,
                "top_ops": rows,
                "sorted_by": "self CUDA time" if cuda else "self CPU time (no GPU)"}

    def write(self, out: Path) -> str:
        """Write profile-LOOP.json and .md under `out`; the markdown text."""
        s = self.summary()
        safe = "".join(c if c.isalnum() or c in "-_=." else "_" for c in self.loop)
        busy = s["gpu_busy_s_per_step"]
        head = [f"# Profile of `{self.loop}`: {STEPS} steps after warm-up", "",
                "| per step | value |", "|---|---|",
                f"| wall time | {s['wall_s_per_step'] * 1e3:.1f} ms |"]
        if busy is not None:
            head.append(f"| GPU busy (union of kernels and copies) | {busy * 1e3:.1f} ms "
                        f"({busy / s['wall_s_per_step']:.0%} of wall) |")
        head += [f"| kernels launched | {s['kernels_per_step']:.0f} |",
                 f"| aten ops dispatched (all / top-level) | {s['aten_ops_per_step']:.0f} / "
                 f"{s['top_level_aten_ops_per_step']:.0f} |",
                 f"| CUDA stream/device/event synchronizations (the window's own end included) | "
                 f"{s['syncs_per_step']:.1f} |",
                 f"| scalar reads to the host (`.item()`, `bool()`, `int()` on a tensor; on CUDA "
                 f"tensors each waits for the GPU) | {s['scalar_reads_per_step']:.1f} |", "",
                 f"Top {TOP} ops by {s['sorted_by']}, both steps:", "",
                 "| op | calls | self ms | self CPU ms |", "|---|---|---|---|"]
        body = [f"| `{r['op'][:80]}` | {r['calls']} | {r['self_ms']:.2f} | {r['self_cpu_ms']:.2f} |"
                for r in s["top_ops"]]
        if s["top_host_ops"]:
            body += ["", f"Top {TOP_HOST} ops by self CPU time (the host's side), both steps:", "",
                     "| op | calls | self CPU ms |", "|---|---|---|"]
            body += [f"| `{r['op'][:80]}` | {r['calls']} | {r['self_cpu_ms']:.2f} |"
                     for r in s["top_host_ops"]]
        text = "\n".join(head + body) + "\n"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"profile-{safe}.md").write_text(text, encoding="utf-8")
        (out / f"profile-{safe}.json").write_text(json.dumps(s, indent=1) + "\n", encoding="utf-8")
        return text
