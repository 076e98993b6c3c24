"""Sharded phases: a phase's work split into N shards, each its own resumable unit.

A shard is a phase call with its own folder (`NAME.iN/shards/000K/`), its own committed
batches and its own seeds (the seed key is `PHASE/shardK`, so shards draw distinct numbers and a
resumed shard draws the same ones). `ctx.shard_items(items)` gives a shard its share of a list.
A shard is done when `done.json` (its metrics) exists; a re-run skips done shards and resumes
the others from their committed batches, so a dead worker loses at most its batch in flight.

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
from pathlib import Path
from typing import Any

from runner.errors import PhaseError
from runner.phases.registry import resolve_uses
from runner.phases.shell import check_metrics
from runner.store.atomic import write_json_atomic

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
    ctx = PhaseContext(
        run_id=job["run_id"], phase=phase, iteration=job["iteration"], run_seed=job["run_seed"],
        params=job["params"], output_dir=shard_dir(instance_dir, index), run_dir=Path(job["run_dir"]),
        cache_dir=Path(job["cache_dir"]), spec_dir=Path(job["spec_dir"]), spec_sha256=job["spec_sha256"],
        git_commit=job["git_commit"], model_spec=job["model_spec"],
        log=get_logger(phase=phase, iteration=job["iteration"], shard=index),
        read_input=_reader(job["input_dirs"], phase), input_names=list(job["input_dirs"]),
        input_dirs={k: Path(v) for k, v in job["input_dirs"].items()},
        shard=index, num_shards=job["num_shards"],
    )
    fn = resolve_uses(job["uses"], Path(job["spec_dir"]))
    metrics = check_metrics(fn(ctx), phase, f"return value of {job['uses']} (shard {index})")
    records = ctx.finish_records()
    count = sum(1 for line in records.read_text(encoding="utf-8").splitlines() if line.strip())
    done = {"shard": index, "metrics": metrics, "used_cuda": ctx.used_cuda, "records": count}
    write_json_atomic(shard_dir(instance_dir, index) / "done.json", done)
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


def _run_local_workers(job: dict[str, Any], pending: list[int], workers: int, log: Any) -> None:
    """One worker process per GPU (or per requested worker on CPU), every N-th shard each."""
    gpus = visible_gpus()
    job_path = Path(job["instance_dir"]) / "shards" / "job.json"
    job_path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(job_path, job)
    procs = []
    for w in range(workers):
        mine = pending[w::workers]
        if not mine:
            continue
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_CRASH_")}
        env["CUDA_VISIBLE_DEVICES"] = gpus[w] if w < len(gpus) else ""
        cmd = [sys.executable, "-m", "runner.phases.shards", str(job_path), ",".join(map(str, mine))]
        procs.append((w, mine, subprocess.Popen(cmd, env=env)))
        log.info("shard_worker_started", worker=w, shards=mine, gpu=env["CUDA_VISIBLE_DEVICES"] or "cpu")
    failed = [(w, mine, p.wait()) for w, mine, p in procs]
    failed = [(w, mine, rc) for w, mine, rc in failed if rc != 0]
    if failed:
        detail = "; ".join(f"worker {w} (shards {mine}) exited {rc}" for w, mine, rc in failed)
        raise PhaseError(job["phase"], f"{detail}; `runner resume` redoes what they did not commit")


def _run_ray(job: dict[str, Any], pending: list[int], sharding: dict[str, Any], log: Any) -> None:
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
        ray.get(list(refs))
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
    if pending and sharding.get("executor") == "ray":
        _run_ray(job, pending, sharding, log)
    elif pending:
        workers = sharding.get("workers", "auto")
        workers = len(visible_gpus()) if workers == "auto" else int(workers)
        if workers > 1:
            _run_local_workers(job, pending, min(workers, len(pending)), log)
        else:
            for k in pending:
                run_shard(job, k)
                log.info("shard_done", shard=k)
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
    return aggregate_metrics(dones), any(d["used_cuda"] for d in dones)  # type: ignore[index]


def _worker_main(argv: list[str]) -> int:
    """`python -m runner.phases.shards JOB.json 0,2,4`: a local worker runs its shards in turn."""
    from runner.console.logs import configure_logging  # noqa: PLC0415

    configure_logging()
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    for index in (int(k) for k in argv[1].split(",") if k):
        run_shard(job, index)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
