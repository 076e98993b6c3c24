"""What the LLM benchmarks share: the random-initialised model, a token-id tokenizer, results.

The model is the shape of shared/device/MEASURED.md: a Llama of 1.24B parameters (hidden
2048, 16 layers, 32 heads, 8 KV heads, intermediate 8192, vocabulary 128,256, tied
embeddings) in bf16 on CUDA; `tiny` gives a small float32 one for a CPU smoke run. Prompts are
random token ids, so no tokenizer files are needed: `IdTokenizer` decodes ids to their
numbers and has no EOS, so every row runs to `max_new_tokens` in every engine (as MEASURED's
`min_new_tokens` forced).
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runner.llm.loading.loader import LoadedModel  # noqa: E402

__all__ = ["HBM_BYTES_PER_S", "IdTokenizer", "append_results", "bench_dims", "build", "device_name",
           "print_table", "sync"]

HBM_BYTES_PER_S = 3.0e12  # the H100's device-to-device copy rate measured on the device


class IdTokenizer:
    """Enough of a tokenizer for random-id prompts: pad 0, no BOS/EOS, ids decode to numbers."""

    pad_token_id = 0
    eos_token_id = None
    bos_token_id = None

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return " ".join(str(i) for i in ids)


def bench_dims(tiny: bool) -> dict[str, Any]:
    """The benchmark Llama's LlamaConfig fields (the small one for `tiny`)."""
    dims: dict[str, Any] = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, intermediate_size=128,
                                vocab_size=1000) if tiny else dict(
        hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=8192, vocab_size=128256)
    return dict(max_position_embeddings=4096, tie_word_embeddings=True, bos_token_id=None,
                eos_token_id=None, pad_token_id=0, **dims)


def build(tiny: bool, seed: int = 0) -> tuple[LoadedModel, int]:
    """The random-initialised Llama as a LoadedModel, and its parameter count."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**bench_dims(tiny))
    device = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    params = sum(p.numel() for p in model.parameters())
    lm = LoadedModel(model, IdTokenizer(), device, dtype, {}, "bench-random")
    return lm, params


def device_name(lm: LoadedModel) -> str:
    """The GPU's name, or this machine's processor for a CPU run."""
    if lm.device.type == "cuda":
        return torch.cuda.get_device_name(lm.device)
    return f"CPU ({platform.machine()}, {platform.node()})"


def sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize()


def append_results(title: str, lm: LoadedModel, header: list[str], rows: list[list[str]],
                   notes: list[str]) -> None:
    """Append a section (device, date, command, table, notes) to bench/HISTORY.md, the log
    of runs; bench/RESULTS.md's table of current figures is updated by hand from it."""
    stamp = dt.date.today().isoformat()
    command = "python " + " ".join(["bench/" + Path(sys.argv[0]).name, *sys.argv[1:]])
    import transformers

    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    lines = [f"\n## {title} ({stamp}, {device_name(lm)}, {versions})\n",
             f"Command: `{command}`\n", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", *notes]
    with open(ROOT / "bench" / "HISTORY.md", "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
