"""Sharded phases: a phase's work split into N shards, each its own resumable unit.

A shard is a phase call with its own folder (`NAME.iN/shards/000K/`), its own committed
batches and its own seeds (the seed key is `PHASE/shardK`, so shards draw distinct numbers and a
resumed shard draws the same ones). `ctx.shard_items(items)` gives a shard its share of a list.
A shard is done when `done.json` (its metrics) exists; a re-run skips done shards and resumes
the others from their committed batches, so a dead worker loses at most its batch in flight.
A done shard's batch files are then packed into one file (`BatchStore.pack`).

Executors (`shards: {executor: ...}` in the spec):
* `local`: in this process one shard after another, or, with several visible GPUs (or
  `workers: N`), one worker process per GPU (`CUDA_VISIBLE_DEVICES` set to it), each loading
  its model once and taking every N-th shard. A worker that dies fails the phase; `resume`
  redoes what was not committed.
* `ray`: each shard a Ray task with the spec's `num_gpus`/`num_cpus`, retried by Ray when its
  worker dies. The run folder must be on storage every worker sees: checked before any work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runner.console.view import progress
from runner.errors import PhaseError
from runner.phases.registry import phase_options, resolve_uses
from runner.phases.shell import check_metrics
from runner.store.atomic import write_json_atomic
from runner.store.batches import BatchStore

__all__ = ["NON_ADDITIVE", "aggregate_metrics", "execute_shards", "run_shard", "shard_dir", "shard_job", "visible_gpus"]

# Metrics whose shard values must not be summed (rates, medians, losses, speeds).
NON_ADDITIVE = ("_rate", "acceptance", "median", "mean", "_p", "loss", "per_s", "significant",
                "probe_", "label_bias")


def shard_dir(instance_dir: Path, index: int) -> Path:
    """The folder of shard `index` of a phase instance."""
    return Path(instance_dir) / "shards" / f"{index:04d}"


def _done(instance_dir: Path, index: int) -> dict[str, Any] | None:
    try:
        return json.loads((shard_dir(instance_dir, index) / "done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _reader(input_dirs: dict[str, str], phase: str) -> Any:
    def read(name: str) -> list[dict[str, Any]]:
        if name not in input_dirs:
            raise PhaseError(phase, f"ctx.input('{name}'): not an input of this phase (inputs: {', '.join(input_dirs)})")
        path = Path(input_dirs[name]) / "records.jsonl"
        if not path.exists():
            return []
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    return read


def shard_job(ctx: Any, uses: str, num_shards: int) -> dict[str, Any]:
    """Everything a worker (a process, a Ray task) needs to build a shard's ctx, as JSON."""
    return {
        "run_id": ctx.run_id, "phase": ctx.phase, "iteration": ctx.iteration, "run_seed": ctx.run_seed,
        "uses": uses, "params": ctx.params, "instance_dir": str(ctx.output_dir), "run_dir": str(ctx.run_dir),
        "cache_dir": str(ctx.cache_dir), "spec_dir": str(ctx.spec_dir), "spec_sha256": ctx.spec_sha256,
        "git_commit": ctx.git_commit, "model_spec": ctx.model_spec, "num_shards": num_shards,
        "input_dirs": {name: str(path) for name, path in ctx.input_dirs.items()},
    }


def run_shard(job: dict[str, Any], index: int) -> dict[str, Any]:
    """Run (or finish) one shard; return its done record {metrics, used_cuda, records}."""
    from runner.console.logs import get_logger  # noqa: PLC0415 - workers import lazily
    from runner.phases.context import PhaseContext  # noqa: PLC0415

    instance_dir = Path(job["instance_dir"])
    done = _done(instance_dir, index)
    if done is not None:
        return done
    phase = job["phase"]
    log = get_logger(run_id=job["run_id"], phase=phase, iteration=job["iteration"], shard=index)
    log.info("shard_started", shards=job["num_shards"])
    start = time.monotonic()
    ctx = PhaseContext(
        run_id=job["run_id"], phase=phase, iteration=job["iteration"], run_seed=job["run_seed"],
        params=job["params"], output_dir=shard_dir(instance_dir, index), run_dir=Path(job["run_dir"]),
        cache_dir=Path(job["cache_dir"]), spec_dir=Path(job["spec_dir"]), spec_sha256=job["spec_sha256"],
        git_commit=job["git_commit"], model_spec=job["model_spec"],
        log=log,
        read_input=_reader(job["input_dirs"], phase), input_names=list(job["input_dirs"]),
        input_dirs={k: Path(v) for k, v in job["input_dirs"].items()},
        shard=index, num_shards=job["num_shards"],
    )
    fn = resolve_uses(job["uses"], Path(job["spec_dir"]))
    ctx.options = phase_options(job["uses"], Path(job["spec_dir"]), ctx.params, phase)
    metrics = check_metrics(fn(ctx), phase, f"return value of {job['uses']} (shard {index})")
    records = ctx.finish_records()
    count = sum(1 for line in records.read_text(encoding="utf-8").splitlines() if line.strip())
    done = {"shard": index, "metrics": metrics, "used_cuda": ctx.used_cuda, "records": count}
    write_json_atomic(shard_dir(instance_dir, index) / "done.json", done)
    # A done shard is never run again: its batch files become one pack (issue 15: ~1,200
    # files at 15k examples otherwise). Readers see the same batches either way.
    BatchStore(shard_dir(instance_dir, index)).pack()
    log.info("shard_done", shards=job["num_shards"], records=count, duration_s=round(time.monotonic() - start, 3))
    return done


def visible_gpus() -> list[str]:
    """GPU ids this process may use: `CUDA_VISIBLE_DEVICES`, else what torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return [str(i) for i in range(torch.cuda.device_count())]
    return []


def _last_line(path: Path) -> str:
    """The last non-blank line of a worker's own output (its exception, when it died of one)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line), "")


def _run_local_workers(job: dict[str, Any], pending: list[int], workers: int, log: Any, bar: Any) -> None:
    """One worker process per GPU (or per requested worker on CPU), every N-th shard each.

    Each worker's log events and progress bars come back through its stderr (`relay.pump`),
    so they reach the run's log.jsonl and this process's console; anything else it prints
    goes to `shards/worker-W.log`.
    """
    from runner.console.relay import pump  # noqa: PLC0415 - sharded phases only

    gpus = visible_gpus()
    shards_dir = Path(job["instance_dir"]) / "shards"
    job_path = shards_dir / "job.json"
    job_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job_path, job)

    def on_event(event: Any) -> None:
        if event.get("event") == "shard_done":
            bar.update(1)

    procs, pumps = [], []
    for w in range(workers):
        mine = pending[w::workers]
        if not mine:
            continue
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_CRASH_")}
        env["CUDA_VISIBLE_DEVICES"] = gpus[w] if w < len(gpus) else ""
        cmd = [sys.executable, "-m", "runner.phases.shards", str(job_path), ",".join(map(str, mine))]
        raw_path = shards_dir / f"worker-{w}.log"
        raw = open(raw_path, "a", encoding="utf-8")  # closed once the worker has ended
        proc = subprocess.Popen(cmd, env=env, stdout=raw, stderr=subprocess.PIPE, text=True,
                                encoding="utf-8", errors="replace")
        thread = threading.Thread(target=pump, args=(proc.stderr, log.bind(worker=w), raw, on_event),
                                  name=f"shard-worker-{w}", daemon=True)
        thread.start()
        procs.append((w, mine, proc, raw_path))
        pumps.append((thread, raw))
        log.info("shard_worker_started", worker=w, shards=mine, gpu=env["CUDA_VISIBLE_DEVICES"] or "cpu",
                 output=str(raw_path))
    codes = [(w, mine, p.wait(), raw_path) for w, mine, p, raw_path in procs]
    for thread, raw in pumps:
        thread.join()
        raw.close()
    failed = [(w, mine, rc, raw_path) for w, mine, rc, raw_path in codes if rc != 0]
    if failed:
        detail = "; ".join(
            f"worker {w} (shards {mine}) exited {rc}"
            + (f": {last}" if (last := _last_line(raw_path)) else "") + f" (its output: {raw_path})"
            for w, mine, rc, raw_path in failed)
        raise PhaseError(job["phase"], f"{detail}; `runner resume` redoes what they did not commit")


def _run_ray(job: dict[str, Any], pending: list[int], sharding: dict[str, Any], log: Any, bar: Any) -> None:
    address = sharding.get("address") or os.environ.get("RAY_ADDRESS") or None
    if address is None:
        # A Ray started here is a one-machine cluster: Ray's single-node mode makes it use the
        # loopback address, so its traffic never leaves this machine. Read when Ray imports.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray  # noqa: PLC0415 - optional extra
    except ImportError:
        raise PhaseError(job["phase"], "executor 'ray' needs Ray: pip install '.[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
    probe = Path(job["run_dir"]) / f".ray-probe-{os.getpid()}"
    seen = ray.get(ray.remote(num_cpus=0)(_probe).remote(str(probe)))
    probe.unlink(missing_ok=True)
    if not seen:
        raise PhaseError(job["phase"], f"the run folder {job['run_dir']} is not visible to Ray's workers; "
                         "put --state-dir on storage every worker mounts at the same path")
    res = sharding.get("resources") or {}
    task = ray.remote(num_gpus=res.get("num_gpus", 0), num_cpus=res.get("num_cpus", 1),
                      max_retries=sharding.get("max_retries", 3))(run_shard)
    refs = {task.remote(job, k): k for k in pending}
    log.info("shards_submitted", executor="ray", shards=pending, address=address or "local")
    try:
        waiting = list(refs)
        while waiting:  # Ray's workers do not log to us: report each shard as it finishes
            ready, waiting = ray.wait(waiting, num_returns=1)
            for ref in ready:
                done = ray.get(ref)
                log.info("shard_done", shard=refs[ref], shards=job["num_shards"], records=done["records"])
                bar.update(1)
    except Exception as exc:
        raise PhaseError(job["phase"], f"a Ray shard task failed: {type(exc).__name__}: {exc}") from None


def _probe(path: str) -> bool:
    """On a Ray worker: write a file in the run folder, so the driver can see it is shared."""
    Path(path).write_text("probe\n", encoding="utf-8")
    return True


def aggregate_metrics(dones: list[dict[str, Any]]) -> dict[str, float]:
    """Sum of the shards' additive metrics, plus `shards` and `records`.

    A non-additive metric is dropped, except a critic's probe figures (`probe_*`), which only
    shard 0 computes, once for the phase: those are kept as that shard reported them.
    """
    total: dict[str, float] = {"shards": len(dones), "records": sum(d["records"] for d in dones)}
    single: dict[str, list[float]] = {}
    for d in dones:
        for key, value in d["metrics"].items():
            if not any(tag in key for tag in NON_ADDITIVE):
                total[key] = total.get(key, 0) + value
            elif key.startswith("probe_"):
                single.setdefault(key, []).append(value)
    total.update({key: values[0] for key, values in single.items() if len(values) == 1})
    return total


def execute_shards(job: dict[str, Any], sharding: dict[str, Any], log: Any) -> tuple[dict[str, float], bool]:
    """Run every shard not done yet; join their records in shard order; (metrics, used_cuda)."""
    n, instance_dir = job["num_shards"], Path(job["instance_dir"])
    pending = [k for k in range(n) if _done(instance_dir, k) is None]
    log.info("shards_planned", shards=n, pending=pending, executor=sharding.get("executor", "local"))
    bar = progress(n, f"{job['phase']}: shards", done=n - len(pending))
    try:
        if pending and sharding.get("executor") == "ray":
            _run_ray(job, pending, sharding, log, bar)
        elif pending:
            workers = sharding.get("workers", "auto")
            workers = len(visible_gpus()) if workers == "auto" else int(workers)
            if workers > 1:
                _run_local_workers(job, pending, min(workers, len(pending)), log, bar)
            else:
                for k in pending:
                    run_shard(job, k)
                    bar.update(1)
    finally:
        bar.close()
    dones = [_done(instance_dir, k) for k in range(n)]
    missing = [k for k, d in enumerate(dones) if d is None]
    if missing:
        raise PhaseError(job["phase"], f"shards {missing} did not finish; `runner resume` redoes them")
    with open(instance_dir / "records.jsonl.tmp", "wb") as out:
        for k in range(n):
            out.write((shard_dir(instance_dir, k) / "records.jsonl").read_bytes())
        out.flush()
        os.fsync(out.fileno())
    os.replace(instance_dir / "records.jsonl.tmp", instance_dir / "records.jsonl")
    finished = [d for d in dones if d is not None]  # none is None: `missing` raised above
    return aggregate_metrics(finished), any(d["used_cuda"] for d in finished)


def _worker_main(argv: list[str]) -> int:
    """`python -m runner.phases.shards JOB.json 0,2,4`: a local worker runs its shards in turn."""
    from runner.console.logs import configure_logging  # noqa: PLC0415
    from runner.console.relay import RelayView  # noqa: PLC0415
    from runner.console.view import set_view  # noqa: PLC0415

    configure_logging(verbose=True)  # every event goes to the parent, which filters by its -v
    set_view(RelayView(sys.stderr))
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    for index in (int(k) for k in argv[1].split(",") if k):
        run_shard(job, index)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
