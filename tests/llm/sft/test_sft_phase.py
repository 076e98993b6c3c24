"""The `sft` phase end to end in this process, with a real PhaseContext on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sfthelpers import REPO, make_records

from runner.errors import PhaseError
from runner.llm.sft.phase import sft
from runner.phases.context import PhaseContext
from runner.phases.registry import resolve_uses

PARAMS = {"source": "pairs", "steps": 6, "batch_size": 4, "max_seq_len": 128,
          "checkpoint_every": 3, "log_every": 2}


class Recorder:
    """A logger that keeps every event (name and fields) in a list."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.events.append({"level": level, "event": event, **kw})

    def debug(self, event: str, **kw: Any) -> None:
        self._add("debug", event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)


def _ctx(run_dir: Path, params: dict[str, Any], log: Recorder) -> PhaseContext:
    records = make_records(64)
    return PhaseContext(
        run_id="t", phase="sft", iteration=1, run_seed=1234, params=params,
        output_dir=run_dir / "phases" / "sft.i1", run_dir=run_dir, cache_dir=run_dir / "cache",
        spec_dir=REPO, spec_sha256="0" * 64, git_commit=None,
        model_spec={"path": "fixtures/tiny-base"}, log=log,
        read_input=lambda name: records, input_names=["pairs"],
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhaseContext, Recorder, dict]:
    """One 6-step run of the phase: (ctx, its log, its metrics)."""
    log = Recorder()
    ctx = _ctx(tmp_path_factory.mktemp("run"), PARAMS, log)
    metrics = sft(ctx)
    return ctx, log, metrics


def test_cpu_fallback_logs_its_warning(trained: tuple[PhaseContext, Recorder, dict]) -> None:
    """Without CUDA the phase logs one sft_cpu_fallback warning and does not mark CUDA."""
    ctx, log, _ = trained
    warnings = [e for e in log.events if e["event"] == "sft_cpu_fallback"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert not ctx.used_cuda


def test_record_points_at_the_saved_adapter(trained: tuple[PhaseContext, Recorder, dict]) -> None:
    """The phase's one record holds the absolute adapter folder, steps and final loss."""
    ctx, _, metrics = trained
    (record,) = ctx.records()
    assert Path(record["adapter_dir"]).is_absolute()
    assert (Path(record["adapter_dir"]) / "adapter_model.safetensors").is_file()
    assert record["steps"] == 6 and record["final_loss"] == metrics["final_loss"]


def test_metrics_report_loss_speed_memory_tokens(
        trained: tuple[PhaseContext, Recorder, dict]) -> None:
    """Metrics: final_loss, tokens_per_s, steps, peak_memory_gb, train_tokens, all numbers."""
    _, _, m = trained
    assert m["steps"] == 6 and m["final_loss"] > 0 and m["tokens_per_s"] > 0
    assert m["peak_memory_gb"] > 0 and m["train_tokens"] > 0
    assert m["examples"] == 57  # 64 records, 7 of them keep: false
    json.dumps(m)


def test_loss_curve_is_logged(trained: tuple[PhaseContext, Recorder, dict]) -> None:
    """sft_step lines carry step, loss, lr and tokens/s (steps 1, 2, 4, 6 at log_every 2)."""
    _, log, _ = trained
    steps = [e for e in log.events if e["event"] == "sft_step"]
    assert [e["step"] for e in steps] == [1, 2, 4, 6]
    assert all({"loss", "lr", "tokens_per_s"} <= e.keys() for e in steps)


def test_adapter_loads_onto_the_base_model(trained: tuple[PhaseContext, Recorder, dict],
                                           base_model: Any) -> None:
    """peft's PeftModel.from_pretrained loads the saved adapter onto the base model."""
    from peft import PeftModel

    ctx, _, _ = trained
    (record,) = ctx.records()
    tuned = PeftModel.from_pretrained(base_model, record["adapter_dir"])
    assert any("lora_" in n for n, _ in tuned.named_parameters())
    tuned.unload()


def test_steps_and_epochs_together_are_refused(tmp_path: Path) -> None:
    """with.steps and with.epochs together fail the phase, saying so."""
    with pytest.raises(PhaseError, match="not both"):
        sft(_ctx(tmp_path, {**PARAMS, "epochs": 1}, Recorder()))


def test_unknown_lora_key_is_refused_with_a_hint(tmp_path: Path) -> None:
    """A misspelt with.lora key fails with a did-you-mean hint."""
    with pytest.raises(PhaseError, match="did you mean 'alpha'"):
        sft(_ctx(tmp_path, {**PARAMS, "lora": {"alhpa": 8}}, Recorder()))


def test_epochs_give_whole_passes_over_the_data(tmp_path: Path) -> None:
    """Unpacked, 1 epoch of 57 examples at batch 4 and grad_accum 2: ceil(15 / 2) = 8 steps."""
    params = {**PARAMS, "packing": False, "grad_accum": 2, "checkpoint_every": 50}
    params.pop("steps")
    metrics = sft(_ctx(tmp_path, {**params, "epochs": 1}, Recorder()))
    assert metrics["steps"] == 8


def test_sft_is_a_builtin_phase() -> None:
    """`uses: sft` resolves to this phase function."""
    assert resolve_uses("sft") is sft


def test_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    """A checkpoint whose file fails its sha256 is logged and skipped: resume from the older."""
    sft(_ctx(tmp_path, PARAMS, Recorder()))
    newest = tmp_path / "phases" / "sft.i1" / "checkpoints" / "step-000006"
    (newest / "optimizer.pt").write_bytes(b"damaged")
    log = Recorder()
    metrics = sft(_ctx(tmp_path, PARAMS, log))
    assert [e["event"] for e in log.events].count("sft_checkpoint_unusable") == 1
    assert metrics["resumed_from_step"] == 3 and metrics["steps"] == 6
