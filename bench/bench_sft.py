"""SFT speed and memory: the `sft` phase's training loop against TRL's and a plain loop.

Issue 15, item 4: >= 1.3x TRL's tokens/s at <= its peak memory (the table's last columns). Issue
5, item 1(c): against a plain transformers+peft loop at the same batch. One process, one random-initialised Llama (default: the
1.24B config of the issue), saved once and loaded fresh by every loop:

  plain          AutoModelForCausalLM (+ bitsandbytes 4-bit NF4 on CUDA) +
                 prepare_model_for_kbit_training + peft LoRA; batches of `--batch` examples
                 right-padded to the longest one; loss through `model(..., labels=...)`
                 (full-vocabulary logits); gradient checkpointing per `--plain-gc` (default
                 off, as in the baseline of ../shared/device/MEASURED.md).
  ours-unpacked  the phase's loop (`runner.llm.sft.train.SftTrainer`): chunked loss, no packing.
  ours           the same with packing (rows of up to `--seq` tokens), the phase's default.
  trl            TRL's `SFTTrainer` (bfd packing, padding-free, its fused LM head), set up as in
                 `sft_trl.py`'s docstring, which says what is the same and what differs.
  Options follow the loop's name as `:key=value` (`ours:gc=0.5`, `trl:lean=1`); every option
  of `ours` defaults to off (0), so a bare `ours` is the loop before issue 15's changes (the
  phase itself now runs lean=1 by default):
    ours, ours-unpacked  gc=F  checkpoint that fraction of the decoder layers (the phase's
                               `with.gradient_checkpointing`; default `--gc`, 1 = the CUDA default)
                         bf16=1  norms and residual stream in bf16 (SpeedOptions.bf16_norms)
                         lean=1  the lean LoRA forward (SpeedOptions.lean_lora, bit-identical)
                         chunk=N  loss chunk in positions (default `--loss-chunk`)
                         tiled=1  the loss in [2048 x 16384] lm_head tiles (TrainConfig.tiled_loss)
                         bestfit=1  best-fit packing (DataStream(best_fit=True)): fuller rows
                         remat=1  recompute norms and MLP activation in backward (SpeedOptions.remat)
                         compile=1|2|3  torch.compile each decoder layer (SpeedOptions.compile_mode
                               default | reduce-overhead | max-autotune-no-cudagraphs), rows
                               padded to --seq; the warm-up steps pay the compilation
                         compile=4  only the norms and MLP activation compiled ("parts")
    trl                  lean=1  no entropy / token-accuracy metrics (computed and read back
                               with `.item()` every step by the stock trainer)

Every loop: batch `--batch` rows, LoRA r=`--r` on all linear layers, AdamW, grad-clip 1.0,
bf16 autocast on CUDA.
Examples are random token ids with lengths uniform in [--min-len, --max-len] (default 64-512,
an SFT-like spread) and the first `--prompt-frac` of each as the (unlabelled) prompt.
tokens/s counts real (non-pad) tokens. Peak memory: torch.cuda.max_memory_allocated per loop
(reset before its model is loaded); on CPU the process's max RSS so far (cumulative).

Every run writes results.json and results.md under `--out`. `--profile LOOPS` runs each of those
loops with a torch.profiler window over 2 steps after warm-up and writes `profile-LOOP.md` (see
`sft_profile.py`) instead of timing.

Run:  python bench/bench_sft.py --loops ours,trl --out DIR [--append-results]   (on the GPU)
      python bench/bench_sft.py --profile ours --out DIR                         (on the GPU)
      python bench/bench_sft.py --tiny --loops ours,trl                          (CPU check)
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import random
import resource
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.llm.sft.data import IGNORE, DataPosition, DataStream, Example  # noqa: E402
from runner.llm.sft.model import (  # noqa: E402
    LoraSettings,
    SpeedOptions,
    load_for_training,
    trainable_parameters,
)
from runner.llm.sft.train import SftTrainer, TrainConfig  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from sft_profile import ProfileWindow  # noqa: E402

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
    ap.add_argument("--loops", default="plain,ours-unpacked,ours:gc=0,ours:gc=0.5,ours,trl",
                    help="comma-separated loop specs: plain, ours[:gc=F], ours-unpacked[:gc=F], "
                         "trl[:lean=1]")
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_sft"),
                    help="folder for results.json / results.md (and profile-*.md)")
    ap.add_argument("--profile", metavar="LOOPS",
                    help="profile 2 steps after warm-up of each of these loop specs (comma-"
                         "separated; writes profile-LOOP.md, no timing table)")
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
        left = torch.cuda.memory_allocated(device) / 1e9
        if left > 0.05:  # an earlier loop's tensors still alive would inflate this one's peak
            print(f"warning: {left:.2f} GB still allocated before this loop's model", flush=True)


def _peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(args: argparse.Namespace, folder: Path, device: torch.device,
             examples: list[Example], packing: bool, opts: dict[str, float],
             window: ProfileWindow | None = None) -> dict[str, Any]:
    """The phase's loop: tokens/s over the timed steps, padding, peak memory."""
    _reset(device)
    lora = LoraSettings(r=args.r, alpha=2 * args.r, dropout=0.05, target_modules="all-linear")
    speed = SpeedOptions(bf16_norms=bool(opts["bf16"]), lean_lora=bool(opts["lean"]),
                         remat=bool(opts["remat"]), compile_mode=COMPILE_MODES[int(opts["compile"])])
    model = load_for_training(str(folder), device, lora, 0, opts["gc"], speed=speed)
    stream = DataStream(examples, 0, args.batch, args.seq, packing, pad_id=0,
                        best_fit=bool(opts["bestfit"]), fixed_width=bool(opts["compile"]))
    cfg = TrainConfig(learning_rate=2e-4, schedule="constant", total_steps=args.warmup + args.steps,
                      loss_chunk=int(opts["chunk"]), tiled_loss=bool(opts["tiled"]))
    trainer = SftTrainer(model, stream, cfg, device)
    for _ in range(args.warmup):
        trainer.train_step()
    _sync(device)
    if window is not None:
        window.start()
    real = 0
    start = time.perf_counter()
    for _ in range(args.steps):
        real += trainer.train_step().real_tokens
    _sync(device)
    seconds = time.perf_counter() - start
    if window is not None:
        window.stop()
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


OURS = {"gc": None, "bf16": 0.0, "lean": 0.0, "chunk": None, "tiled": 0.0, "bestfit": 0.0,
        "remat": 0.0, "compile": 0.0}
COMPILE_MODES = {0: None, 1: "default", 2: "reduce-overhead", 3: "max-autotune-no-cudagraphs",
                 4: "parts"}
LOOP_OPTIONS: dict[str, dict[str, float | None]] = {
    "plain": {}, "ours": OURS, "ours-unpacked": OURS, "trl": {"lean": 0.0}}
TARGET_SPEED, TARGET_MEMORY = 1.3, 1.0  # issue 15 item 4: >= 1.3x TRL's tokens/s at <= its peak


def parse_loop(spec: str, args: argparse.Namespace) -> tuple[str, dict[str, float], str]:
    """`kind:key=value:...` -> (kind, options with defaults, canonical label)."""
    kind, *pairs = spec.split(":")
    if kind not in LOOP_OPTIONS:
        raise SystemExit(f"--loops: unknown loop {kind!r} in {spec!r}; "
                         f"one of {', '.join(LOOP_OPTIONS)}")
    opts: dict[str, float] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if key not in LOOP_OPTIONS[kind] or not eq:
            known = ", ".join(f"{k}=" for k in LOOP_OPTIONS[kind]) or "none"
            raise SystemExit(f"--loops: {spec!r}: unknown option {pair!r} for {kind} "
                             f"(options: {known})")
        try:
            opts[key] = float(value)
        except ValueError:
            raise SystemExit(f"--loops: {spec!r}: {key} wants a number, got {value!r}") from None
        if key == "compile" and opts[key] not in COMPILE_MODES:
            raise SystemExit(f"--loops: {spec!r}: compile is one of {sorted(COMPILE_MODES)}")
    flags = {"gc": args.gc, "chunk": args.loss_chunk}
    defaults = {k: (flags[k] if v is None else v) for k, v in LOOP_OPTIONS[kind].items()}
    full = {k: float(v) for k, v in defaults.items() if v is not None} | opts
    label = ":".join([kind] + [f"{k}={v:g}" for k, v in full.items()])
    return kind, full, label


def run_loop(kind: str, opts: dict[str, float], args: argparse.Namespace, folder: Path,
             device: torch.device, examples: list[Example],
             window: ProfileWindow | None = None) -> dict[str, Any]:
    if kind == "plain":
        if window is not None:
            raise SystemExit("--profile: profile an ours or trl loop")
        return run_plain(args, folder, device, examples)
    if kind in ("ours", "ours-unpacked"):
        return run_ours(args, folder, device, examples, kind == "ours", opts, window)
    from sft_trl import run_trl

    _reset(device)
    row = run_trl(args, folder, device, examples, bool(opts["lean"]), args.out, window)
    return row | {"peak_gb": _peak_gb(device)}


def _ratio(row: dict[str, Any], base: dict[str, Any] | None, key: str) -> str:
    return f"{row[key] / base[key]:.2f}x" if base else "-"


def table(rows: dict[str, dict[str, Any]], device: torch.device) -> str:
    mem = "peak GB (cuda max allocated)" if device.type == "cuda" else "max RSS GB (process)"
    plain = rows.get("plain") if "error" not in rows.get("plain", {}) else None
    trl = next((r for n, r in rows.items() if n.startswith("trl") and "error" not in r), None)
    lines = [f"| loop | real tokens/s | s/step | pad/real tokens | {mem} | tokens/s vs plain "
             "| memory vs plain | tokens/s vs TRL | memory vs TRL | target met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:120]} |" + " |" * 8)
            continue
        met = "-"
        if trl is not None and not name.startswith("trl"):
            ok = (r["tokens_per_s"] >= TARGET_SPEED * trl["tokens_per_s"]
                  and r["peak_gb"] <= TARGET_MEMORY * trl["peak_gb"])
            met = "yes" if ok else "no"
        lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {r['step_s']:.3f} | "
                     f"{r['pad_frac']:.2f} | {r['peak_gb']:.2f} | {_ratio(r, plain, 'tokens_per_s')} "
                     f"| {_ratio(r, plain, 'peak_gb')} | {_ratio(r, trl, 'tokens_per_s')} "
                     f"| {_ratio(r, trl, 'peak_gb')} | {met} |")
    if trl is not None:
        lines.append(f"\nTarget (issue 15, item 4): >= {TARGET_SPEED}x TRL's tokens/s at <= "
                     f"{TARGET_MEMORY:g}x its peak memory (TRL: the first `trl` row).")
    return "\n".join(lines)


def _setup(args: argparse.Namespace, billions: float, device: torch.device) -> str:
    return (f"Llama {billions:.2f}B params (hidden {args.hidden}, {args.layers} layers, "
            f"{args.heads} heads, {args.kv_heads} KV heads, vocab {args.vocab}, "
            f"{'untied' if args.untied else 'tied'}), batch {args.batch} x {args.seq}, "
            f"LoRA r={args.r} all linear, example lengths {args.min_len}-{args.max_len} "
            f"(prompt {args.prompt_frac:.0%}), gradient checkpointing in plain "
            f"{'on' if args.plain_gc else 'off'} (ours: gc=fraction of layers; trl: on), "
            f"{args.warmup} warm-up + {args.steps} timed "
            f"steps, {'4-bit NF4 + bf16' if device.type == 'cuda' else 'float32'}")


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    specs = [x.strip() for x in args.loops.split(",") if x.strip()]
    if args.profile:
        specs = [x.strip() for x in args.profile.split(",") if x.strip()]
        args.steps = 2  # the profiled window
    loops = [parse_loop(x, args) for x in specs]  # every bad spec fails before any work
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-sft-") as tmp:
        folder = Path(tmp) / "model"
        billions = build_model(args, device, folder)
        from sft_trl import save_tokenizer

        save_tokenizer(folder, args.vocab)
        # Enough examples that no loop wraps around: packing takes several per row.
        examples = make_examples(args, args.batch * (args.warmup + args.steps) * 8)
        if args.profile:
            for kind, opts, label in loops:
                window = ProfileWindow(label, device)
                try:
                    run_loop(kind, opts, args, folder, device, examples, window)
                except Exception:  # the next loop's profile is still worth having
                    traceback.print_exc()
                    continue
                print(window.write(args.out), flush=True)
            return
        rows: dict[str, dict[str, Any]] = {}
        for kind, opts, label in loops:
            try:
                rows[label] = run_loop(kind, opts, args, folder, device, examples)
            except Exception as exc:  # one failing variant must not lose the grid's other rows
                traceback.print_exc()
                rows[label] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            print(f"{label}: {rows[label]}", flush=True)
    text = table(rows, device)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    setup = _setup(args, billions, device)
    (args.out / "results.json").write_text(json.dumps(
        {"command": command, "device": name, "date": str(dt.date.today()), "setup": setup,
         "rows": rows}, indent=1) + "\n", encoding="utf-8")
    block = (f"## SFT loops ({dt.date.today()}, {name})\n\nCommand: `{command}`\n\n{setup}.\n\n"
             f"{text}\n")
    (args.out / "results.md").write_text(block, encoding="utf-8")
    print(text)
    if args.append_results:
        with open(ROOT / "bench" / "HISTORY.md", "a", encoding="utf-8") as f:
            f.write("\n" + block)


if __name__ == "__main__":
    main()
