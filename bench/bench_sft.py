"""SFT speed and memory: the `sft` phase's training loop against a plain transformers+peft loop.

Issue 5, item 1(c) and the targets of item 4 (>= 1.5x the tokens/s, <= 0.5x the peak memory of
the plain loop at the same batch). One process, one random-initialised Llama (default: the
1.24B config of the issue), saved once and loaded fresh by every loop:

  plain          AutoModelForCausalLM (+ bitsandbytes 4-bit NF4 on CUDA) +
                 prepare_model_for_kbit_training + peft LoRA; batches of `--batch` examples
                 right-padded to the longest one; loss through `model(..., labels=...)`
                 (full-vocabulary logits); gradient checkpointing per `--plain-gc` (default
                 off, as in the baseline of ../shared/device/MEASURED.md).
  ours-unpacked  the phase's loop (`runner.llm.sft.train.SftTrainer`): chunked loss, no packing.
  ours           the same with packing (rows of up to `--seq` tokens), the phase's default.
  A `:gc=F` suffix (`ours:gc=0.5`) checkpoints that fraction of the decoder layers (the
  phase's `with.gradient_checkpointing`); without one, `--gc` (default 1, the phase's CUDA
  default).

Every loop: batch `--batch` rows, LoRA r=`--r` on all linear layers, AdamW, grad-clip 1.0,
bf16 autocast on CUDA.
Examples are random token ids with lengths uniform in [--min-len, --max-len] (default 64-512,
an SFT-like spread) and the first `--prompt-frac` of each as the (unlabelled) prompt.
tokens/s counts real (non-pad) tokens. Peak memory: torch.cuda.max_memory_allocated per loop
(reset before its model is loaded); on CPU the process's max RSS so far (cumulative).

Run:  python bench/bench_sft.py [--append-results]        (on the GPU)
      python bench/bench_sft.py --tiny                     (CPU smoke check, seconds)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import platform
import random
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.llm.sft.data import IGNORE, DataPosition, DataStream, Example  # noqa: E402
from runner.llm.sft.model import LoraSettings, load_for_training, trainable_parameters  # noqa: E402
from runner.llm.sft.train import SftTrainer, TrainConfig  # noqa: E402

TINY = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 128,
        "vocab": 1000, "batch": 4, "seq": 128, "steps": 3, "warmup": 1, "min_len": 16,
        "max_len": 128}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--untied", action="store_true", help="untied embeddings (default tied)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per loop")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--prompt-frac", type=float, default=0.3)
    ap.add_argument("--loss-chunk", type=int, default=1024)
    ap.add_argument("--gc", type=float, default=1.0,
                    help="fraction of layers checkpointed in `ours` loops without a :gc= suffix")
    ap.add_argument("--plain-gc", action="store_true", help="gradient checkpointing in plain")
    ap.add_argument("--loops", default="plain,ours-unpacked,ours:gc=0,ours:gc=0.5,ours")
    ap.add_argument("--tiny", action="store_true", help="small config, few steps (CPU check)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads when there is no GPU (1: steady on a shared box)")
    ap.add_argument("--append-results", action="store_true")
    if "--tiny" in sys.argv[1:]:
        ap.set_defaults(**TINY)  # defaults only: explicit flags still win
    return ap.parse_args()


def build_model(args: argparse.Namespace, device: torch.device, folder: Path) -> float:
    """A random-initialised Llama saved to `folder`; its parameter count in billions."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate,
        vocab_size=args.vocab, tie_word_embeddings=not args.untied, max_position_embeddings=4096,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    n = sum(p.numel() for p in model.parameters()) / 1e9
    model.save_pretrained(folder)
    del model
    return n


def make_examples(args: argparse.Namespace, count: int) -> list[Example]:
    r = random.Random(1)
    out = []
    for _ in range(count):
        n = r.randint(args.min_len, min(args.max_len, args.seq))
        ids = tuple(r.randrange(3, args.vocab) for _ in range(n))
        out.append(Example(ids, max(1, int(n * args.prompt_frac))))
    return out


def _reset(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(args: argparse.Namespace, folder: Path, device: torch.device,
             examples: list[Example], packing: bool, checkpointing: float) -> dict[str, Any]:
    """The phase's loop: tokens/s over the timed steps, padding, peak memory."""
    _reset(device)
    lora = LoraSettings(r=args.r, alpha=2 * args.r, dropout=0.05, target_modules="all-linear")
    model = load_for_training(str(folder), device, lora, 0, checkpointing)
    stream = DataStream(examples, 0, args.batch, args.seq, packing, pad_id=0)
    cfg = TrainConfig(learning_rate=2e-4, schedule="constant", total_steps=args.warmup + args.steps,
                      loss_chunk=args.loss_chunk)
    trainer = SftTrainer(model, stream, cfg, device)
    for _ in range(args.warmup):
        trainer.train_step()
    _sync(device)
    real = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        real += trainer.train_step().real_tokens
    _sync(device)
    seconds = time.perf_counter() - start
    del trainer, model
    return {"tokens_per_s": real / seconds, "step_s": seconds / args.steps,
            "pad_frac": _pad_ratio(stream, args), "peak_gb": _peak_gb(device)}


def _pad_ratio(stream: DataStream, args: argparse.Namespace) -> float:
    """Pad tokens over real tokens of the timed micro-batches, rebuilt from the stream."""
    pos, real, total = DataPosition(), 0, 0
    for step in range(args.warmup + args.steps):
        mb, pos = stream.next(pos)
        if step >= args.warmup:
            real += mb.real_tokens
            total += mb.input_ids.numel()
    return (total - real) / real


def plain_model(args: argparse.Namespace, folder: Path, device: torch.device) -> Any:
    """transformers (+ bitsandbytes on CUDA) + prepare_model_for_kbit_training + peft LoRA."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    gc_kwargs = {"use_reentrant": False}
    if device.type == "cuda":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), quantization_config=quant, dtype=torch.bfloat16, device_map={"": 0},
            attn_implementation="sdpa")
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=args.plain_gc,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                     attn_implementation="sdpa")
        if args.plain_gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    model.config.use_cache = False
    config = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.05,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    torch.manual_seed(0)
    return get_peft_model(model, config).train()


def run_plain(args: argparse.Namespace, folder: Path, device: torch.device,
              examples: list[Example]) -> dict[str, Any]:
    """The plain loop: padded batches of examples, `labels=` loss, one .item() per step."""
    _reset(device)
    model = plain_model(args, folder, device)
    params = trainable_parameters(model)
    opt = torch.optim.AdamW(params, lr=2e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    real = padded = 0
    start = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            _sync(device)
            start = time.perf_counter()
        at = (step * args.batch) % (len(examples) - args.batch)
        batch = examples[at : at + args.batch]
        width = max(len(e) for e in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE)
        for i, e in enumerate(batch):
            ids[i, : len(e)] = torch.tensor(e.input_ids)
            mask[i, : len(e)] = 1
            labels[i, e.n_prompt : len(e)] = ids[i, e.n_prompt : len(e)]
        with autocast:
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                         labels=labels.to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if step >= args.warmup:
            real += int(mask.sum())
            padded += ids.numel() - int(mask.sum())
    _sync(device)
    seconds = time.perf_counter() - start
    del model, opt
    return {"tokens_per_s": real / seconds, "step_s": seconds / args.steps,
            "pad_frac": padded / real, "peak_gb": _peak_gb(device)}


def table(rows: dict[str, dict[str, Any]], device: torch.device) -> str:
    mem = "peak GB (cuda max allocated)" if device.type == "cuda" else "max RSS GB (process)"
    plain = rows.get("plain")
    lines = [f"| loop | real tokens/s | s/step | pad/real tokens | {mem} | tokens/s vs plain "
             "| memory vs plain |", "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        speed = f"{r['tokens_per_s'] / plain['tokens_per_s']:.2f}x" if plain else "-"
        memory = f"{r['peak_gb'] / plain['peak_gb']:.2f}x" if plain else "-"
        lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['step_s']:.3f} | "
                     f"{r['pad_frac']:.2f} | {r['peak_gb']:.2f} | {speed} | {memory} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    loops = [x.strip() for x in args.loops.split(",") if x.strip()]
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        folder = Path(tmp) / "model"
        billions = build_model(args, device, folder)
        # Enough examples that no loop wraps around: packing takes several per row.
        examples = make_examples(args, args.batch * (args.warmup + args.steps) * 8)
        rows: dict[str, dict[str, Any]] = {}
        for loop in loops:
            kind, _, option = loop.partition(":gc=")
            if kind == "plain":
                rows[loop] = run_plain(args, folder, device, examples)
            elif kind in ("ours", "ours-unpacked"):
                gc_fraction = float(option) if option else args.gc
                label = f"{kind}:gc={gc_fraction:g}"
                rows[label] = run_ours(args, folder, device, examples, kind == "ours", gc_fraction)
                loop = label
            else:
                raise SystemExit(f"unknown loop {loop!r}")
            print(f"{loop}: {rows[loop]}", flush=True)
    text = table(rows, device)
    print(text)
    if args.append_results:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        setup = (f"Llama {billions:.2f}B params (hidden {args.hidden}, {args.layers} layers, "
                 f"{args.heads} heads, {args.kv_heads} KV heads, vocab {args.vocab}, "
                 f"{'untied' if args.untied else 'tied'}), batch {args.batch} x {args.seq}, "
                 f"LoRA r={args.r} all linear, example lengths {args.min_len}-{args.max_len} "
                 f"(prompt {args.prompt_frac:.0%}), gradient checkpointing in plain "
                 f"{'on' if args.plain_gc else 'off'} (ours: gc=fraction of layers), "
                 f"{args.warmup} warm-up + {args.steps} timed "
                 f"steps, {'4-bit NF4 + bf16 autocast' if device.type == 'cuda' else 'float32'}")
        block = (f"\n## SFT: the phase's loop vs plain transformers+peft ({dt.date.today()}, "
                 f"{name})\n\nCommand: `{command}`\n\n{setup}.\n\n{text}\n")
        with open(ROOT / "bench" / "HISTORY.md", "a", encoding="utf-8") as f:
            f.write(block)


if __name__ == "__main__":
    main()
