"""Load a base model for LoRA training: QLoRA on CUDA, float32 LoRA on CPU.

Training mutates the model (adapters injected, dtypes changed), so this is a fresh
`from_pretrained`, never the memoised inference model of `runner.llm.loading.loader`.

CUDA: the QLoRA recipe — bitsandbytes 4-bit NF4 weights with double quantisation and bfloat16
compute, `peft.prepare_model_for_kbit_training` (norms to float32; the frozen embedding and
lm_head back to bf16, see `_quantised`), then LoRA; gradient checkpointing on a chosen fraction
of the decoder layers (`_checkpoint_layers`). bitsandbytes is imported only here, only on CUDA:
CPU machines do not have it. CPU: the same LoRA on a float32 model.

Attention is `sdpa` explicitly: packed rows rely on transformers deriving a block-diagonal mask
from restarting position ids, which sdpa (and eager) do for any batch size, whereas the
flash-attention-2 path recognises packing only at batch size 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from runner.errors import PhaseError
from runner.llm.sft.fastlora import install_lean_lora
from runner.llm.sft.remat import compile_parts, install_remat

__all__ = ["LoraSettings", "SpeedOptions", "adapter_state", "load_adapter_state",
           "load_for_training", "prepare_base", "trainable_parameters"]


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA hyper-parameters of `with.lora`."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: str | tuple[str, ...] = "all-linear"

    def as_dict(self) -> dict[str, Any]:
        targets = self.target_modules
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "target_modules": targets if isinstance(targets, str) else list(targets)}


@dataclass(frozen=True)
class SpeedOptions:
    """How the training model is built for speed; the defaults are the plain QLoRA recipe.

    `bf16_norms` (CUDA only): skip `prepare_model_for_kbit_training`'s float32 upcast. The
    norms' weights are frozen bf16 values (nothing is lost keeping them so) and Llama-style
    RMSNorm computes its variance in float32 anyway, but a float32 norm weight makes the norm's
    output float32, bitsandbytes returns its matmul in its input's dtype, and from the first
    MLP on the whole residual stream, the MLP's [tokens, intermediate] activations and the
    checkpointed layer inputs are float32: twice the memory and traffic, and a cast before
    every matmul. With it the stream stays bf16, as in inference and in TRL's trainer; the loss
    differs from the upcast model's by bf16 rounding only.
    `lean_lora` (on by default: bit-identical to peft's forward, tested on CPU, float32 and
    bf16 autocast): the lean LoRA forward of `fastlora.py` (no clone, fewer kernels).
    `remat`: recompute the norms and the MLP activation in backward (`remat.py`): less memory
    at a layer's backward, bit-identical results.
    `compile_mode`: torch.compile each decoder layer in this mode ("default", "reduce-overhead",
    ...; None: eager). All layers share one compiled graph (the same code, parameters as
    inputs); a new input shape compiles again, so give the data stream a fixed row width.
    "parts": only the norms and the MLP activation (`remat.compile_parts`), the pure-torch
    pieces, should whole layers (4-bit matmuls, peft) not compile.
    Fuses the norms, rotary, activation, dropout and LoRA's small ops into a few kernels: the
    host dispatches far fewer. Dropout masks then come from inductor's generator (seeded from
    torch's, so a resumed run draws the same ones); the first step pays the compilation.
    """

    bf16_norms: bool = False
    lean_lora: bool = True
    remat: bool = False
    compile_mode: str | None = None


_GC_KWARGS = {"use_reentrant": False}


def _checkpoint_layers(model: Any, fraction: float) -> None:
    """Checkpoint `fraction` of the decoder layers (evenly spaced); none at 0.

    Why a fraction: checkpointing every layer saves the most memory but recomputes the whole
    forward pass (about a third more time per step); checkpointing some layers buys memory
    back in proportion. Non-reentrant checkpointing works with the decoder called directly
    (the chunked loss does not go through `model.forward`) and needs no input-grad hook.
    """
    layers = list(getattr(model.get_decoder(), "layers", []))
    if fraction <= 0 or not layers:
        return
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:  # transformers >= 5.2x; the older name warns there
        enable(activation_checkpointing_kwargs=_GC_KWARGS)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=_GC_KWARGS)
    k = max(1, round(fraction * len(layers)))
    chosen = {int(i * len(layers) / k) for i in range(k)}
    for i, layer in enumerate(layers):
        layer.gradient_checkpointing = i in chosen


def _quantised(path: str, device: torch.device, phase: str, bf16_norms: bool) -> Any:
    try:
        import bitsandbytes  # noqa: F401, PLC0415 - lazy: only CUDA machines have it
    except ImportError:
        raise PhaseError(phase, "QLoRA on CUDA needs bitsandbytes: pip install '.[gpu]'") from None
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig  # noqa: PLC0415

    index = device.index if device.index is not None else torch.cuda.current_device()
    quant = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        path, quantization_config=quant, dtype=torch.bfloat16, device_map={"": index},
        attn_implementation="sdpa", local_files_only=True,
    )
    return prepare_base(model, bf16_norms)


def prepare_base(model: Any, bf16_norms: bool) -> Any:
    """Freeze a bf16 base model for LoRA; unless `bf16_norms`, the QLoRA recipe's float32 norms.

    Checkpointing is set up by `_checkpoint_layers` afterwards (a fraction of the layers).
    """
    from peft import prepare_model_for_kbit_training  # noqa: PLC0415 - peft loads only for training

    if bf16_norms:  # see SpeedOptions: every parameter stays as loaded, frozen
        for param in model.parameters():
            param.requires_grad = False
        return model
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    # prepare_model_for_kbit_training upcasts every non-4-bit parameter to float32, the frozen
    # (often tied) embedding and lm_head included: with a 128k vocabulary that is 1 GB more and
    # an lm_head that autocast must cast back to bf16 at every loss chunk. They are frozen, so
    # bf16 is all they need; the norms keep their float32.
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.to(torch.bfloat16)
    return model


def _float32(path: str) -> Any:
    from transformers import AutoModelForCausalLM  # noqa: PLC0415

    return AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation="sdpa", local_files_only=True,
    )


def load_for_training(path: str, device: torch.device, lora: LoraSettings, seed: int,
                      checkpointing: float, phase: str = "sft",
                      speed: SpeedOptions = SpeedOptions()) -> Any:
    """A base model with fresh LoRA adapters (initialised from `seed`), in train mode.

    `checkpointing`: the fraction of decoder layers under gradient checkpointing (0 to 1).
    `speed`: see `SpeedOptions` (`bf16_norms` only changes the CUDA path: on CPU the model is
    float32 throughout).
    """
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # the console is for the run's own lines
    if device.type == "cuda":
        model = _quantised(path, device, phase, speed.bf16_norms)
    else:
        model = _float32(path).to(device)
    _checkpoint_layers(model, checkpointing)
    model.config.use_cache = False  # a KV cache is useless in training and costs memory
    targets = lora.target_modules
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft's stub says int; a float alpha works and is ours to set
        lora_dropout=lora.dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none", task_type="CAUSAL_LM",
    )
    # LoRA's A matrices are drawn from the global torch RNG: seed it right here, so the
    # initial adapter depends on the seed only (and a resumed run may then overwrite it).
    torch.manual_seed(seed)
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # e.g. target modules that match nothing
        raise PhaseError(phase, f"with.lora: {exc}") from None
    if speed.lean_lora:
        install_lean_lora(peft_model)
    if speed.remat:
        install_remat(model.get_decoder())
    if speed.compile_mode == "parts":
        compile_parts(model.get_decoder())
    elif speed.compile_mode is not None:
        for layer in getattr(model.get_decoder(), "layers", []):
            layer.compile(mode=speed.compile_mode)
    peft_model.train()
    return peft_model


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """The parameters the optimizer updates (the LoRA matrices), in a stable order."""
    return [p for _, p in model.named_parameters() if p.requires_grad]


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """The LoRA tensors as peft saves them (keys without the adapter name)."""
    from peft import get_peft_model_state_dict  # noqa: PLC0415

    return get_peft_model_state_dict(model)


def load_adapter_state(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Copy saved LoRA tensors into the model's parameters in place (optimizer refs stay)."""
    from peft import set_peft_model_state_dict  # noqa: PLC0415

    result = set_peft_model_state_dict(model, tensors)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ValueError(f"checkpoint lacks LoRA tensors: {missing[:3]}")
