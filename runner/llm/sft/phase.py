"""The `sft` built-in phase: LoRA fine-tuning (QLoRA on CUDA) on an earlier phase's pairs.

Reads the records of `with.source` that have an `instruction` and a `response` and whose
`keep` is not false, formats them with `sft_format` (the loss covers the response, the end tag
and EOS only), tokenises and packs them (`sft_data`), and trains LoRA adapters with a chunked
loss (`sft_loss`) through `sft_train`. Every `checkpoint_every` optimizer steps (and after the
last) it writes an atomic checkpoint (`sft_checkpoint`); on start it resumes from the newest
one, so a killed phase ends with the same adapter, bit for bit on CPU, as an uninterrupted one.
The base model is `model:` of the spec (path relative to the spec's folder); its `dtype` is
not used: 4-bit NF4 with bf16 compute on CUDA, float32 on CPU (with a `sft_cpu_fallback` warning).

**`with:`** `source` (default: the latest earlier phase of pair-critic or response records;
an `export` phase is read as its rows' `prompt` and `completion`),
`templates` (prompt-format overrides), `lora` {`r` 16, `alpha` 32, `dropout` 0.05,
`target_modules` "all-linear" or a list}, `learning_rate` 2e-4, `schedule` cosine | linear |
constant, `warmup_steps` 0, `steps` or `epochs` (not both; default 1 epoch), `batch_size` 8
(rows per micro-batch), `grad_accum` 1, `max_seq_len` 512, `packing` true, `checkpoint_every`
10, `keep_checkpoints` 2, `loss_chunk` 512, `seed` (default `ctx.seed`),
`gradient_checkpointing` (true, false, or the fraction of decoder layers checkpointed;
default true with CUDA, false on CPU), `weight_decay` 0.0,
`max_grad_norm` 1.0 (0: no clipping), `log_every` 5.

Output: `output_dir/adapter/` (peft `save_pretrained`), one record through `ctx.batches`
(`adapter_dir`, `steps`, `final_loss`, `templates`, `lora`, `base_model`, `source`), the loss
curve as `sft_step` log lines, and metrics `final_loss` (mean response-token loss of the last
step), `tokens_per_s` (real tokens per training second), `steps`, `peak_memory_gb`,
`train_tokens`, `examples`, `skipped`, `truncated`, `resumed_from_step`.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch

from runner.errors import PhaseError
from runner.llm.builtin import default_source, model_spec, options_of, progress, template_overrides
from runner.llm.loading.loader import load_tokenizer, resolve_device
from runner.llm.sft.checkpoint import (
    Checkpoint,
    capture_rng,
    clean_leftovers,
    complete_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from runner.llm.sft.data import DataStream, tokenize_pairs
from runner.llm.sft.model import LoraSettings, SpeedOptions, load_for_training
from runner.llm.sft.options import SftOptions
from runner.llm.sft.train import SftTrainer, TrainConfig
from runner.llm.text.prompts import templates_from
from runner.llm.text.sft_format import sft_example
from runner.store.atomic import fsync_dir

__all__ = ["sft"]

# How the phase trains, for speed and memory (bench/bench_sft.py's knobs, measured on the H200
# on 2026-12-01, bench/RESULTS_issue15.md section 4): bf16 norms and the lean LoRA forward took
# our loop from 15.6k to 28.0k tokens/s (TRL's SFTTrainer: 8.8k stock, 18.8k without its
# per-step metrics) and its peak from 4.57 to 3.46 GB; best-fit packing cut padding from 0.16
# to 0.07 of the real tokens (13.6k to 19.9k tokens/s in a run with the tiled loss on). The
# tiled loss saved 0.23 GB but halved the speed, and recomputing the norms saved 0.13 GB for
# 6%: both off. The loss chunk (`with.loss_chunk`, 512 positions) bounds the float32 logits.
SPEED = SpeedOptions(bf16_norms=True, lean_lora=True)
TILED_LOSS = False
BEST_FIT = True


def _lora(o: SftOptions) -> LoraSettings:
    targets = o.lora.target_modules
    return LoraSettings(r=o.lora.r, alpha=o.lora.alpha, dropout=o.lora.dropout,
                        target_modules=targets if isinstance(targets, str) else tuple(targets))


def _checkpointing(o: SftOptions, default: float) -> float:
    """with.gradient_checkpointing: true (every layer), false, or the fraction of layers."""
    value = o.gradient_checkpointing
    if value is None:
        return default
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value)


def _pair_of(record: dict[str, Any]) -> tuple[Any, Any]:
    """(instruction, response) of a Stage-1 record, or (prompt, completion) of an export's row."""
    if "instruction" in record or "response" in record:
        return record.get("instruction"), record.get("response")
    return record.get("prompt"), record.get("completion")


def _pairs(ctx: Any, o: SftOptions, templates: Any) -> tuple[str, list[tuple[str, str]]]:
    stages = ("pair_critic", "responses", "merged")
    source = str(o.source or default_source(ctx, stages, ctx.phase))
    pairs = [_pair_of(r) for r in ctx.input(source) if r.get("keep", True) is not False]
    pairs = [(ins, resp) for ins, resp in pairs if ins and resp]
    if not pairs:
        raise PhaseError(ctx.phase, f"source '{source}' has no kept records with an "
                         "instruction and a response (or a prompt and a completion)")
    return source, [sft_example(str(ins), str(resp), templates) for ins, resp in pairs]


def _peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB


def _save_adapter(model: Any, out: Path) -> Path:
    """`save_pretrained` into a temporary folder, fsync, then rename to `out` (atomic)."""
    for leftover in out.parent.glob(f".tmp-{out.name}-*"):  # from a save that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    tmp = out.parent / f".tmp-{out.name}-{secrets.token_hex(4)}"
    model.save_pretrained(str(tmp))
    for f in tmp.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(tmp)
    old = out.parent / f".tmp-{out.name}-old-{secrets.token_hex(4)}"
    if out.exists():  # a resumed phase saves the same adapter again: swap, then delete
        os.rename(out, old)
    os.rename(tmp, out)
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out.resolve()


def _usable_checkpoint(ctx: Any, root: Path) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; a damaged one is logged and skipped."""
    for path in complete_checkpoints(root):
        try:
            return load_checkpoint(path)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            ctx.log.warning("sft_checkpoint_unusable", path=str(path), error=str(exc))
    return None


def _train(ctx: Any, trainer: SftTrainer, ckpt_root: Path, every: int, keep: int,
           log_every: int) -> None:
    """Optimizer steps to the end: the loss curve in the log, a checkpoint every `every`."""
    window_tokens, window_s = 0, 0.0
    bar = progress(ctx, trainer.cfg.total_steps, f"{ctx.phase}: train", done=trainer.step)
    while not trainer.done:
        stats = trainer.train_step()
        bar.update(1)
        window_tokens += stats.real_tokens
        window_s += stats.seconds
        if stats.step % log_every == 0 or stats.step == 1 or trainer.done:
            ctx.log.info("sft_step", step=stats.step, loss=round(stats.loss, 6),
                         lr=stats.lr, tokens_per_s=round(window_tokens / max(window_s, 1e-9), 1))
            window_tokens, window_s = 0, 0.0
        if stats.step % every == 0 or trainer.done:  # the last step too: resume finds it done
            adapter, opt, sched = trainer.checkpoint_parts()
            save_checkpoint(ckpt_root, stats.step, adapter, opt, sched, capture_rng(),
                            trainer.state(), keep=keep)
    bar.close()


def sft(ctx: Any) -> dict[str, float]:
    """Train LoRA adapters on the source's pairs; resume from the newest checkpoint."""
    o = options_of(ctx, SftOptions)  # steps and epochs together: refused there
    lora = _lora(o)
    templates = templates_from(template_overrides(o.templates), ctx.phase)
    schedule = o.schedule
    seed = o.seed if o.seed is not None else int(ctx.seed)
    batch_size, grad_accum = o.batch_size, o.grad_accum
    max_seq_len, packing = o.max_seq_len, o.packing
    every, keep = o.checkpoint_every, o.keep_checkpoints
    log_every = o.log_every

    spec = model_spec(ctx)
    device = resolve_device(spec.get("device"), ctx.phase)
    source, pairs = _pairs(ctx, o, templates)
    tok = load_tokenizer(spec, ctx.phase)
    examples, skipped, truncated = tokenize_pairs(tok, pairs, max_seq_len)
    if not examples:
        raise PhaseError(ctx.phase, f"every example's prompt is >= max_seq_len {max_seq_len}")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    stream = DataStream(examples, seed, batch_size, max_seq_len, packing, pad_id,
                        best_fit=BEST_FIT, fixed_width=SPEED.compile_mode is not None)
    total_micro: int | None = None
    if o.steps is not None:
        total_steps = o.steps
    else:
        epochs = o.epochs or 1
        total_micro = sum(stream.micro_batches_in_epoch(e) for e in range(epochs))
        total_steps = math.ceil(total_micro / grad_accum)
    cfg = TrainConfig(
        learning_rate=o.learning_rate, schedule=schedule,
        warmup_steps=o.warmup_steps, total_steps=total_steps,
        total_micro_batches=total_micro, grad_accum=grad_accum,
        loss_chunk=o.loss_chunk, weight_decay=o.weight_decay, max_grad_norm=o.max_grad_norm,
        tiled_loss=TILED_LOSS,
    )
    if device.type == "cuda":
        ctx.mark_cuda()
        torch.cuda.reset_peak_memory_stats(device)
    else:
        why = "model.device is cpu" if spec.get("device") == "cpu" else "CUDA is not available"
        ctx.log.warning("sft_cpu_fallback", reason=why, detail="training the same LoRA on a "
                        "float32 model: no 4-bit quantisation, no bf16 compute")
    checkpointing = _checkpointing(o, 1.0 if device.type == "cuda" else 0.0)
    model = load_for_training(str(spec["path"]), device, lora, seed, checkpointing, ctx.phase,
                              speed=SPEED)
    trainer = SftTrainer(model, stream, cfg, device)

    ckpt_root = Path(ctx.output_dir) / "checkpoints"
    removed = clean_leftovers(ckpt_root)
    resumed_from = 0
    ck = _usable_checkpoint(ctx, ckpt_root)
    if ck is not None:
        trainer.restore(ck.adapter, ck.optimizer, ck.scheduler, ck.state)
        restore_rng(ck.rng)  # last: nothing may draw between here and the next step
        resumed_from = trainer.step
    ctx.log.info("sft_started", source=source, examples=len(examples), skipped=skipped,
                 truncated=truncated, total_steps=total_steps, device=str(device),
                 packing=packing, gradient_checkpointing=checkpointing,
                 resumed_from_step=resumed_from, removed_leftovers=removed)

    _train(ctx, trainer, ckpt_root, every, keep, log_every)

    adapter_dir = _save_adapter(model, Path(ctx.output_dir) / "adapter")
    final_loss = trainer.progress.losses[-1]
    record = {"stage": "sft", "adapter_dir": str(adapter_dir), "steps": trainer.step,
              "final_loss": final_loss, "base_model": str(spec["path"]), "source": source,
              "templates": templates.model_dump(mode="json"), "lora": lora.as_dict()}
    for batch in ctx.batches([record], size=1):
        batch.write(batch.items)
    peak = _peak_memory_gb(device)
    tokens_per_s, train_tokens, steps = trainer.tokens_per_s(), trainer.progress.train_tokens, trainer.step
    del trainer, model  # give the GPU memory back to later phases of this process
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "final_loss": final_loss, "steps": steps, "tokens_per_s": tokens_per_s,
        "train_tokens": train_tokens, "peak_memory_gb": peak, "examples": len(examples),
        "skipped": skipped, "truncated": truncated, "resumed_from_step": resumed_from,
    }
