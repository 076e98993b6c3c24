"""Build a model's Triton kernels in a helper process while the model loads.

Why a process: a thread that built them beside the model load (the first attempt) shared the
GIL with the load and finished after the first call had built most kernels itself, and it
touched process-wide state (transformers' default dtype, the family module's rotary
function) while the model was being built (bench/RESULTS_issue15.md, section 3). The helper
is a separate interpreter: its own GIL, nothing shared but Triton's on-disk cache
(`TRITON_CACHE_DIR`, default ~/.triton/cache), whose writes are atomic (temporary file, then
rename), so a kernel the parent builds at the same time is simply built twice.

What it builds: `kernel_plan.plan(shape)`, each kernel through the decoder's own wrapper
call with `warmup` in place of the launch (`kernel_plan.call`), so the cache key is the one
the parent's first launch computes and the parent finds the binary on disk; and each
kernel's launcher (a small C module Triton compiles with the system's C compiler, also
cached on disk). It never touches CUDA: Triton is given the GPU's target explicitly (a
compile-only driver), so the helper takes no GPU memory and cannot collide with the parent
on a GPU in exclusive-process mode. The kernels are spread over forked worker processes.

The parent's side never fails because of the helper: `start` returns at once (or None), and
a helper that cannot start, crashes or is slow leaves the parent to build what is missing, as
without it. The Stage-1 phases wait for it (`finish`) at most 15 s once their model is
loaded. A helper still running when the parent exits is ended then. Once a helper has built
every kernel of a shape it leaves a `marker` in the cache, and later processes start none.

Run by hand (what `start` runs): python -m runner.llm.kernel_prebuild.helper SHAPE_JSON
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

import structlog

from runner.llm.kernel_prebuild import plan as kernel_plan
from runner.llm.kernel_prebuild.plan import KernelShape

__all__ = ["Prebuild", "build_all", "build_one", "marker", "start", "start_for"]

_log = structlog.get_logger("runner.llm")
_MODULES = ("triton_parts", "triton_sampling", "triton_attention")


class Prebuild:
    """A running helper: `wait` for it (benchmarks, tests), `stop` it; `report` once done."""

    def __init__(self, process: subprocess.Popen[str], kernels: list[str], errors: IO[bytes]
                 ) -> None:
        self.process, self.kernels, self.errors = process, kernels, errors
        self.started = time.perf_counter()
        self._records: list[dict[str, Any]] | None = None

    def wait(self, timeout: float | None = None) -> int | None:
        """The helper's exit code, or None if it is still running after `timeout` s."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def report(self) -> list[dict[str, Any]]:
        """One record per kernel the helper built: {kernel, seconds, ok, error?}."""
        if self._records is None:
            out = self.process.stdout.read() if self.process.stdout else ""
            self._records = [json.loads(line) for line in out.splitlines()
                             if line.startswith("{")]
        return self._records

    def finish(self, timeout: float) -> int | None:
        """Wait up to `timeout` s and log how it went: `kernel_prebuild_done`, or a warning
        with what failed (the first call then builds what is missing)."""
        code = self.wait(timeout)
        seconds = round(time.perf_counter() - self.started, 2)
        if code is None:
            _log.warning("kernel_prebuild_failed", error=f"still running after {seconds} s")
            return None
        records = self.report()
        failed = [r for r in records if not r.get("ok")]
        if code == 0 and not failed:
            _log.info("kernel_prebuild_done", seconds=seconds, kernels=len(records))
            return code
        self.errors.seek(0)
        tail = self.errors.read().decode(errors="replace")[-300:]
        why = "; ".join(f"{r['kernel']}: {r.get('error')}" for r in failed)[:300] or tail
        _log.warning("kernel_prebuild_failed", exit=code, error=why)
        return code

    def stop(self) -> None:
        """End the helper and its workers (its own process group); a half-written cache
        entry is only a temporary file, never a damaged entry."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except OSError:  # already gone
                pass
            self.wait(5)


def marker(shape: KernelShape, env: Mapping[str, str]) -> Path:
    """The file a helper leaves in Triton's cache (`env`'s TRITON_CACHE_DIR, else Triton's
    default) once it built every kernel of `shape`: named by the shape, the kernels' sources
    and Triton's version, so a change of any of them builds again."""
    cache = env.get("TRITON_CACHE_DIR") or os.path.join(
        env.get("TRITON_HOME") or os.path.expanduser("~"), ".triton", "cache")
    digest = hashlib.sha256(json.dumps(shape.to_json(), sort_keys=True).encode())
    kernels = Path(__file__).resolve().parents[1] / "decoding"
    for module in _MODULES:
        digest.update((kernels / f"{module}.py").read_bytes())
    try:
        from importlib.metadata import version  # noqa: PLC0415

        digest.update(version("triton").encode())
    except Exception:
        pass
    return Path(cache) / "runner-prebuilt" / f"{digest.hexdigest()[:32]}.json"


def start(shape: KernelShape | None, workers: int | None = None,
          env: dict[str, str] | None = None) -> Prebuild | None:
    """Start the helper for `shape` (None: nothing to build, returns None; nor when an
    earlier helper built them all into this cache: `marker`). Returns at once; any failure
    to start is logged and gives None."""
    if shape is None:
        return None
    kernels = kernel_plan.plan(shape)
    try:
        child_env = dict(os.environ if env is None else env)
        if marker(shape, child_env).exists():
            _log.info("kernel_prebuild_skipped", reason="built before into this cache")
            return None
        # Triton's interpreter (set for CPU test runs) would build nothing.
        child_env.pop("TRITON_INTERPRET", None)
        # The helper imports this package from where the caller has it.
        root = str(Path(__file__).resolve().parents[3])
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (root, child_env.get("PYTHONPATH")) if p)
        errors = tempfile.TemporaryFile()  # a file, not a pipe: a chatty helper never blocks
        argv = [sys.executable, "-m", "runner.llm.kernel_prebuild.helper",
                json.dumps(shape.to_json())]
        if workers is not None:
            argv.append(str(workers))
        # Its own session: `stop` ends the helper with the workers it forked, and a Ctrl-C
        # meant for the run does not reach it mid-write.
        process = subprocess.Popen(argv, env=child_env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=errors, text=True,
                                   start_new_session=True)
    except Exception as exc:  # the parent builds the kernels itself, as without a helper
        _log.warning("kernel_prebuild_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        return None
    helper = Prebuild(process, kernels, errors)
    atexit.register(helper.stop)
    _log.info("kernel_prebuild_started", pid=process.pid, kernels=len(kernels))
    return helper


_STARTED: set[tuple[KernelShape, str]] = set()


def start_for(config: Any, dtype: Any, device: Any) -> Prebuild | None:
    """`start` for a model of `config` about to be loaded in `dtype` on `device`, once per
    shape and Triton cache in a process (the phases call it before `load_model`); None where
    no kernel would run (CPU, float32, another family, an old GPU, kernels switched off)."""
    try:
        from runner.llm.decoding import triton_support  # noqa: PLC0415 - imports triton

        if device.type != "cuda" or not triton_support.available(device):
            return None
        import torch  # noqa: PLC0415

        capability = torch.cuda.get_device_capability(device)
        shape = kernel_plan.shape_of(config, dtype, capability)
        if shape is None:
            return None
        key = (shape, os.environ.get("TRITON_CACHE_DIR", ""))
        if key in _STARTED:
            return None
        _STARTED.add(key)
    except Exception as exc:  # the first call builds them, as without a helper
        _log.warning("kernel_prebuild_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        return None
    return start(shape)


class _CompileOnly:
    """Triton's driver for a process that compiles for a GPU it never opens."""

    def __init__(self, capability: int) -> None:
        from triton.backends.compiler import GPUTarget  # noqa: PLC0415 - helper process only

        self.target = GPUTarget("cuda", capability, 32)

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_current_target(self) -> Any:
        return self.target


class _Build:
    """Stands in for a JIT kernel: `kernel[grid](...)` builds it (or does nothing)."""

    def __init__(self, jit: Any, name: str, wanted: str, built: list[str]) -> None:
        self.jit, self.name, self.wanted, self.built = jit, name, wanted, built

    def __getitem__(self, grid: Any) -> Any:
        def launch(*args: Any, **kwargs: Any) -> None:
            # Only the wanted kernel, once (the search launches some kernels every pass).
            if self.name != self.wanted or self.name in self.built:
                return
            compiled = self.jit.warmup(*args, grid=grid, **kwargs)
            self.built.append(self.name)
            try:  # the launcher module is cached too; it needs libcuda, absent on CPU hosts
                from triton.backends.nvidia.driver import CudaLauncher  # noqa: PLC0415

                CudaLauncher(compiled.src, compiled.metadata)
            except Exception as exc:  # the parent builds it (well under a second)
                _LAUNCHERS_MISSED.append(f"{type(exc).__name__}: {exc}"[:200])

        return launch


_JITS: dict[str, Any] = {}  # this process's real JIT kernels, by plan name
_LAUNCHERS_MISSED: list[str] = []  # why a launcher was not built, this process


def _install(wanted: str, built: list[str]) -> None:
    """Replace the kernels of our modules, in this process, by `_Build` stand-ins."""
    from runner.llm.decoding import triton_attention, triton_parts, triton_sampling  # noqa: PLC0415

    if not _JITS:
        _JITS.update({f"parts.{n}": triton_parts._kernel(n) for n in triton_parts.NAMES})
        _JITS.update({f"sampling.{n}": k for n, k in triton_sampling._kernels().items()})
        _JITS["attention.decode"] = triton_attention._kernel()
    for name in triton_parts.NAMES:
        triton_parts._KERNELS[name] = _Build(_JITS[f"parts.{name}"], f"parts.{name}", wanted,
                                             built)
    for name in triton_sampling.SOURCES:
        triton_sampling._KERNELS[name] = _Build(_JITS[f"sampling.{name}"], f"sampling.{name}",
                                                wanted, built)
    triton_attention._KERNELS[:] = [_Build(_JITS["attention.decode"], "attention.decode",
                                           wanted, built)]


def build_one(name: str, shape_json: dict[str, Any]) -> dict[str, Any]:
    """Build kernel `name` of the plan into Triton's cache; a record of how it went.

    For the helper's processes only: it switches this process's Triton to compiling without
    a GPU and replaces our modules' kernels by build stand-ins (`_install`)."""
    started = time.perf_counter()
    try:
        shape = KernelShape.from_json(shape_json)
        launch = kernel_plan.call(name, shape)  # an unknown name fails here, before any change
        import triton  # noqa: PLC0415 - helper process only

        triton.runtime.driver.set_active(_CompileOnly(shape.capability))
        built: list[str] = []
        _LAUNCHERS_MISSED.clear()
        _install(name, built)
        launch()
        if not built:
            raise RuntimeError("the wrapper call launched no such kernel")
        return {"kernel": name, "ok": True, "seconds": round(time.perf_counter() - started, 3),
                "launcher": _LAUNCHERS_MISSED[-1] if _LAUNCHERS_MISSED else "built"}
    except Exception as exc:
        return {"kernel": name, "ok": False, "seconds": round(time.perf_counter() - started, 3),
                "error": f"{type(exc).__name__}: {exc}"[:300]}


def _driver_utils() -> None:
    # Triton's own C helpers (cuda_utils), built once per machine and cache.
    try:
        from triton.backends.nvidia.driver import CudaUtils  # noqa: PLC0415

        CudaUtils()
    except Exception:
        pass


def build_all(shape: KernelShape, workers: int | None = None) -> list[dict[str, Any]]:
    """Build the plan's kernels over `workers` forked processes (default: half the CPUs)."""
    names = kernel_plan.plan(shape)
    # The first build here: it pays Triton's one-time set-up (hashing its own sources for
    # the cache key, loading the compiler), about a second, which the forked workers then
    # inherit instead of each paying it again.
    records = [build_one(names[0], shape.to_json())]
    rest = names[1:]
    workers = workers or max(1, min(len(rest), (os.cpu_count() or 2) // 2))
    import multiprocessing  # noqa: PLC0415

    # Forked after the imports (torch, triton, our modules) and before anything opened a
    # GPU (nothing here does), so each worker starts at once.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        utils = pool.submit(_driver_utils)
        records += pool.map(build_one, rest, [shape.to_json()] * len(rest))
        utils.result()
    return records


def main(argv: list[str]) -> int:
    shape = KernelShape.from_json(json.loads(argv[0]))
    workers = int(argv[1]) if len(argv) > 1 else None
    records = build_all(shape, workers)
    for record in records:
        print(json.dumps(record), flush=True)
    if not all(r["ok"] for r in records):
        return 1
    done = marker(shape, os.environ)
    done.parent.mkdir(parents=True, exist_ok=True)
    part = done.with_suffix(f".{os.getpid()}.tmp")
    part.write_text(json.dumps({"shape": shape.to_json(), "kernels": records}) + "\n")
    os.replace(part, done)  # atomic: a marker is there whole or not at all
    return 0


if __name__ == "__main__":
    import triton  # noqa: F401 - before the fork, so workers inherit it

    from runner.llm.decoding import triton_attention, triton_parts, triton_sampling  # noqa: F401

    sys.exit(main(sys.argv[1:]))
