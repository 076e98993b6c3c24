"""The critic's forward pass: the next-token logits after each prompt, computed fast.

Two things the plain `model(input_ids, attention_mask, logits_to_keep=1)` call does not do:

Right padding without a mask. Where the model's logits are lm_head(final hidden state) (the
families `static_kv.supported` accepts), rows are padded on the right and the decoder runs
with no attention mask: causal attention never lets a real token see the padding after it,
positions are 0..n-1 as for the unpadded prompt, and SDPA can take its flash kernel, which a
padding mask rules out. The hidden state at each row's last real token is gathered, and only
those rows go through lm_head. Other models keep the left-padded call with a mask.

Compiled decoder layers. Eager, a layer's RMSNorms, rotary embedding, SiLU·up product and
residual adds are a dozen memory-bound kernels around its matrix products; compiled
(`torch.compile`, dynamic shapes, so one compilation serves every layer and every bucket
shape) they fuse. On the H100 that took the critic from 456 to 652 TFLOP/s on the issue's
length mix, for ~7 s of compiling (bench/RESULTS.md). That pays only on big jobs, so in the
default `auto` mode compiling starts once this process has scored `COMPILE_AFTER_TOKENS` real
tokens eagerly with the model (the ski-rental rule: eager time about equal to the compile
time, so a job never costs much more than twice what hindsight would have chosen), on CUDA
only. `RUNNER_CRITIC_COMPILE=always|never` overrides. The compiled layers are switched on only
inside the critic's forwards; generation runs the layers as they are. Until they are, a
bf16/fp16 model's norms, rotary embedding and SiLU product run as Triton kernels
(`triton_parts`), which cost about a second to build.
"""

from __future__ import annotations

import weakref
from typing import Any

import structlog
import torch

from runner.llm.decoding import triton_parts, triton_support
from runner.llm.decoding.basics import forward_params, on_device
from runner.llm.decoding.compiled_parts import compiled_calls, installed, wanted
from runner.llm.decoding.static_kv import supported
from runner.llm.loading.loader import LoadedModel

__all__ = ["COMPILE_AFTER_TOKENS", "COMPILE_ENV", "next_token_logits", "should_compile"]

COMPILE_ENV = "RUNNER_CRITIC_COMPILE"  # "auto" (default) | "always" | "never"
COMPILE_AFTER_TOKENS = 1_500_000  # ~8 s of eager scoring of a 1B model on the H100
_log = structlog.get_logger("runner.llm")
_SCORED: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_COMPILED: weakref.WeakKeyDictionary[Any, list[tuple[Any, Any]] | None] = weakref.WeakKeyDictionary()


def should_compile(device: torch.device, scored_tokens: int) -> bool:
    """Whether the next critic forward runs compiled layers (see the module's docstring)."""
    return wanted(COMPILE_ENV, device, scored_tokens, COMPILE_AFTER_TOKENS)


def next_token_logits(lm: LoadedModel, rows: list[list[int]]) -> torch.Tensor:
    """(rows, vocab) float32 logits of the token after each row of token ids."""
    if not supported(lm.model):
        return _left_padded(lm, rows)
    with on_device(lm.device):  # compiled and Triton kernels launch on the current device
        return _fast(lm, rows)


def _fast(lm: LoadedModel, rows: list[list[int]]) -> torch.Tensor:
    model = lm.model
    real = sum(len(r) for r in rows)
    if should_compile(lm.device, _SCORED.get(model, 0)) and _compiled_layers(model) is not None:
        try:
            # Installed for the critic's forward only: generation and SFT see eager layers.
            with installed(_compiled_layers(model) or []):
                return _right_padded(lm, rows)
        except torch.cuda.OutOfMemoryError:
            raise  # the caller splits the batch
        except Exception as exc:
            _log.warning("critic_compile_failed", error=str(exc)[:300])
            _COMPILED[model] = None
    logits = _with_kernels(lm, rows)
    _SCORED[model] = _SCORED.get(model, 0) + real
    return logits


def _with_kernels(lm: LoadedModel, rows: list[list[int]]) -> torch.Tensor:
    # The eager forward with the Triton parts where they run; if Triton cannot build them
    # here, switched off for the process (`triton_support`) and the same forward without.
    if not triton_parts.usable(lm.model, lm.device, lm.dtype):
        return _right_padded(lm, rows)
    try:
        with triton_parts.switched_on(lm.model):
            return _right_padded(lm, rows)
    except torch.cuda.OutOfMemoryError:
        raise  # the caller splits the batch
    except Exception as exc:
        triton_support.switch_off(exc, _log)
    return _right_padded(lm, rows)


def _right_padded(lm: LoadedModel, rows: list[list[int]]) -> torch.Tensor:
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=lm.device)
    last = torch.tensor([len(r) - 1 for r in rows], device=lm.device)
    hidden = lm.model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
    picked = hidden[torch.arange(len(rows), device=lm.device), last]
    return lm.model.get_output_embeddings()(picked).float()


def _left_padded(lm: LoadedModel, rows: list[list[int]]) -> torch.Tensor:
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=lm.device)
    kwargs: dict[str, Any] = {"input_ids": ids}
    if any(len(r) != width for r in rows):
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                            device=lm.device)
        kwargs["attention_mask"] = mask
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    if "logits_to_keep" in forward_params(type(lm.model)):
        kwargs["logits_to_keep"] = 1  # the label is the next token: the last position only
    return lm.model(use_cache=False, **kwargs).logits[:, -1, :].float()


def _compiled_layers(model: Any) -> list[tuple[Any, Any]] | None:
    """(decoder layer, its compiled call) pairs, made once per model; None once it failed."""
    if model not in _COMPILED:
        layers = getattr(model.get_decoder(), "layers", None)
        if layers is not None:
            _log.info("critic_compiling", layers=len(layers))
        _COMPILED[model] = None if layers is None else compiled_calls(list(layers))
    return _COMPILED[model]
