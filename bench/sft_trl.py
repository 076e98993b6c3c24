"""TRL's `SFTTrainer` as `bench_sft.py`'s `trl` loop: the trainer users pick, set up as they would.

What is the same as the `ours` loops: the saved random model, the same examples (pre-tokenised,
prompt tokens without loss, completion tokens with loss: `input_ids` + `completion_mask` with
`completion_only_loss=True`, and TRL's collator also drops the loss of each packed example's
first token, as ours does), LoRA r/alpha/dropout on all linear layers, AdamW at the same
learning rate, constant schedule, no weight decay, grad-clip 1.0, `max_length` = `--seq`,
per-device batch = `--batch` rows, gradient checkpointing with `use_reentrant=False`, sdpa
attention; on CUDA QLoRA (NF4, double quantisation, bf16 compute) with `bf16=True`, on CPU
float32 (`bf16=False`).

What differs, because it is TRL's way and what its users get:
- packing is TRL's default `bfd` (best-fit decreasing over the whole data set, rows close to
  `--seq` tokens) and padding-free: a step is ONE flattened row of up to batch x seq tokens whose
  position ids restart per example (transformers builds the block-diagonal mask from them);
- model preparation is TRL's: no `prepare_model_for_kbit_training` (norms stay bf16), LoRA
  weights cast to bf16 on a quantised model, `enable_input_require_grads`;
- the loss is TRL's fused LM head (chunked log-probs of labelled positions), which also computes
  entropy and top-1 agreement for its `entropy` / `mean_token_accuracy` metrics and reads them
  back with `.item()` every step; the optimizer is the Trainer's default (`adamw_torch_fused` on
  torch >= 2.8); the data order is the Trainer's shuffled sampler.

Switched off, since they are not training: logging (`logging_strategy="no"`), saving, evaluation,
`report_to="none"`, the progress bar. `trl:lean=1` also drops the two metrics (the fused head
computes log-probs only, no `.item()` per step): what a user could get by subclassing.

Timing: a `TrainerCallback` synchronises CUDA at the end of step `--warmup` and of the last
step; the tokens of the steps between are counted in `training_step` (padding-free rows have no
pad, so `input_ids.numel()` is the real token count, as `MicroBatch.real_tokens` in ours).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_trl", "save_tokenizer"]


def save_tokenizer(folder: Path, vocab: int) -> None:
    """A word-level tokenizer with one token per id (`<pad>` 0, `<s>` 1, `</s>` 2) into `folder`.

    TRL needs a tokenizer (`processing_class`) even for pre-tokenised data (pad and EOS tokens);
    this one fits the random model's vocabulary exactly and needs no network.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3} | {f"t{i}": i for i in range(4, vocab)}
    core = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", unk_token="<unk>")
    tok.save_pretrained(folder)


def _dataset(examples: Sequence[Any]) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({
        "input_ids": [list(e.input_ids) for e in examples],
        "completion_mask": [[0] * e.n_prompt + [1] * (len(e) - e.n_prompt) for e in examples],
    })


class _Clock:
    """Tokens and seconds of the steps after warm-up (set by the callback and the trainer)."""

    def __init__(self, warmup: int, last: int, device: torch.device, window: Any = None) -> None:
        self.warmup, self.last, self.device, self.window = warmup, last, device, window
        self.tokens = 0
        self.start = self.seconds = 0.0

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _trainer_classes(clock: _Clock, lean: bool) -> tuple[type, type]:
    from transformers import TrainerCallback
    from trl import SFTTrainer

    class Timing(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == clock.warmup:
                clock.sync()
                clock.tokens, clock.start = 0, time.perf_counter()
                if clock.window is not None:
                    clock.window.start()
            elif state.global_step == clock.last:
                clock.sync()
                clock.seconds = time.perf_counter() - clock.start
                if clock.window is not None:
                    clock.window.stop()

    class CountingSFT(SFTTrainer):  # type: ignore[misc]
        def training_step(self, model: Any, inputs: dict[str, Any], *a: Any, **kw: Any) -> Any:
            clock.tokens += int(inputs["input_ids"].numel())  # metadata only: no sync
            return super().training_step(model, inputs, *a, **kw)

        if lean:
            def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                             num_items_in_batch: Any = None) -> Any:
                # SFTTrainer.compute_loss's nll branch without the metric read-backs.
                inputs["use_cache"] = False
                outputs = model(**inputs, fused_lm_head=True)
                count = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
                loss = (-outputs.log_probs).sum() / torch.as_tensor(count).clamp(min=1)
                return (loss, outputs) if return_outputs else loss

    return Timing, CountingSFT


def run_trl(args: argparse.Namespace, folder: Path, device: torch.device,
            examples: Sequence[Any], lean: bool, out: Path, window: Any = None) -> dict[str, Any]:
    """TRL's SFTTrainer on the saved model: tokens/s of the timed steps (`window`: a
    `sft_profile.ProfileWindow` opened over them)."""
    import trl.trainer.sft_trainer as sft_module
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig

    cuda = device.type == "cuda"
    init: dict[str, Any] = {"attn_implementation": "sdpa",
                            "dtype": torch.bfloat16 if cuda else torch.float32}
    quant = None
    if cuda:
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                   bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        init["device_map"] = {"": device.index or 0}
    config = SFTConfig(
        output_dir=str(out / "trl-output"), max_steps=args.warmup + args.steps,
        per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        learning_rate=2e-4, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0,
        bf16=cuda, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        max_length=args.seq, packing=True, packing_strategy="bfd", completion_only_loss=True,
        model_init_kwargs=init, logging_strategy="no", save_strategy="no", eval_strategy="no",
        report_to="none", disable_tqdm=True, seed=0, use_cpu=not cuda,
    )
    lora = LoraConfig(r=args.r, lora_alpha=2 * args.r, lora_dropout=0.05,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    clock = _Clock(args.warmup, args.warmup + args.steps, device, window)
    timing, trainer_cls = _trainer_classes(clock, lean)
    dataset = _dataset(examples)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    original = sft_module.add_fused_lm_head
    if lean:  # the fused head computes log-probs only (entropy and top-1 feed metrics alone)
        sft_module.add_fused_lm_head = functools.partial(original, outputs=("log_probs",))
    try:
        trainer = trainer_cls(model=str(folder), args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=lora,
                              quantization_config=quant, callbacks=[timing()])
    finally:
        sft_module.add_fused_lm_head = original
    rows = len(trainer.train_dataset)
    packed_tokens = sum(len(x) for x in trainer.train_dataset["input_ids"])
    trainer.train()
    del trainer
    if clock.seconds <= 0:
        raise SystemExit("trl: the timed steps did not run (fewer steps than --warmup + --steps?)")
    return {"tokens_per_s": clock.tokens / clock.seconds, "step_s": clock.seconds / args.steps,
            "pad_frac": 0.0, "packed_fill": packed_tokens / (rows * args.seq)}
