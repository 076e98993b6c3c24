"""Clean base-model loading, shared by every built-in phase of one process.

Why "clean": Stage 1 prompts BASE models with completion text, so the loader makes sure no
chat formatting can creep in. The tokenizer's chat template is removed (set to None, never
applied) and the provenance says so; prompts are encoded with one explicit BOS policy (prepend
BOS when the tokenizer has one, no other special tokens); the chat-format tokens of the
vocabulary form a denylist that every prompt is checked against (`contamination.py`); and a
sentinel completion is decoded greedily at load, recorded, and loudly flagged if it answers
in chat role markers (a sign the "base" model is really a chat model).

Loading is memoised per process on (path, revision, dtype, device, trust_remote_code), so a
run whose phases all name one model loads it once; `load_count()` counts real loads, which the
critic's re-use test relies on. Hashing (`model_fingerprint`) reads files only and loads no
model, so the critic can key its score cache without loading anything.
"""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from runner.errors import PhaseError
from runner.llm.loading.contamination import chat_denylist, check_token_ids, role_markers

__all__ = [
    "SENTINEL_PROMPT",
    "Fingerprint",
    "LoadedModel",
    "ModelLoadError",
    "clear_models",
    "encode_prompts",
    "fingerprint_soon",
    "load_count",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "resolve_device",
    "resolve_dtype",
]

SENTINEL_PROMPT = "The three largest cities in France are Paris,"
_SENTINEL_TOKENS = 16
_SENTINEL_ATTENTION = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "vocab.txt", "added_tokens.json", "chat_template.jinja",
)
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_log = structlog.get_logger("runner.llm")


class ModelLoadError(PhaseError):
    """The spec's `model:` cannot be loaded as asked (bad dtype/device, missing files)."""


@dataclass(frozen=True)
class Fingerprint:
    """File hashes of a model folder; `model_hash` identifies weights+config+tokenizer."""

    path: str
    revision: str | None
    config_sha256: str
    weights_sha256: str
    tokenizer_sha256: str

    @property
    def model_hash(self) -> str:
        joined = f"{self.config_sha256}:{self.weights_sha256}:{self.tokenizer_sha256}"
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


@dataclass
class LoadedModel:
    """A loaded base model with its clean tokenizer, provenance and prompt policy."""

    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    provenance: dict[str, Any]
    model_hash: str
    denylist: dict[int, str] = field(default_factory=dict)

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Token ids of each prompt: BOS first if the tokenizer has one, no other specials."""
        return encode_prompts(self.tokenizer, prompts)

    def check_prompts(
        self,
        prompts: list[str],
        ids: list[str],
        phase: str = "prompt",
        token_ids: list[list[int]] | None = None,
    ) -> list[list[int]]:
        """Encode `prompts` (unless given) and fail if one holds a chat token; return the ids."""
        encoded = token_ids if token_ids is not None else self.encode(prompts)
        check_token_ids(self.denylist, encoded, ids, phase)
        return encoded


def encode_prompts(tokenizer: Any, prompts: list[str]) -> list[list[int]]:
    """The BOS policy: prepend BOS when the tokenizer has one; no other special tokens."""
    if not prompts:
        return []
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    return [([bos] if bos is not None else []) + list(row) for row in ids]


def _spec_key(spec: dict[str, Any], phase: str) -> tuple[str, str | None, str, str, bool]:
    # Keyed on the *resolved* device and dtype, so `auto` and its explicit spelling share one.
    device = resolve_device(spec.get("device"), phase)
    dtype = resolve_dtype(spec.get("dtype"), device, phase)
    return (str(spec["path"]), spec.get("revision"), str(dtype), str(device),
            bool(spec.get("trust_remote_code", False)))


def resolve_device(name: str | None, phase: str = "model") -> torch.device:
    """`auto` -> cuda when available, else cpu; an explicit cuda without CUDA is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(phase, f"model.device is '{name}' but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ModelLoadError(phase, f"model.device '{name}' is not auto, cpu or cuda") from None


def resolve_dtype(name: str | None, device: torch.device, phase: str = "model") -> torch.dtype:
    """`auto` -> bfloat16 on CUDA when supported (else float16), float32 on CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in _DTYPES:
        known = ", ".join(["auto", *_DTYPES])
        raise ModelLoadError(phase, f"model.dtype '{name}' is not one of {known}")
    return _DTYPES[name]


def _model_dir(spec: dict[str, Any], phase: str) -> Path:
    path = Path(str(spec["path"])).expanduser()
    if path.is_dir():
        return path.resolve()
    # Not a folder: a hub id. Fetch (or find in the local cache) one snapshot so that hashing
    # and loading read the very same files.
    try:
        from huggingface_hub import snapshot_download  # noqa: PLC0415 - only a hub id needs the hub client

        return Path(snapshot_download(str(spec["path"]), revision=spec.get("revision")))
    except Exception as exc:  # no network, unknown id, ...
        raise ModelLoadError(phase, f"model.path '{spec['path']}' is no folder and "
                             f"could not be fetched: {exc}") from None


def _sha256_files(files: list[Path]) -> str:
    """Streaming sha256 over the files' names and contents (multi-GB weights fit in 8 MiB)."""
    outer = hashlib.sha256()
    for f in files:
        inner = hashlib.sha256()
        with f.open("rb") as fh:
            while chunk := fh.read(8 << 20):
                inner.update(chunk)
        outer.update(f"{f.name}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


# One hashing per model folder and process, begun by `fingerprint_soon` on a thread (hashlib
# and file reads release the GIL), so a phase loads the model while its weights are hashed.
_FINGERPRINTS: dict[tuple[str, str | None], Future[Fingerprint]] = {}
_HASHING = threading.Lock()


def fingerprint_soon(spec: dict[str, Any], phase: str = "model") -> Future[Fingerprint]:
    """`model_fingerprint` begun on a thread (once per model folder); what is wrong with the
    folder (not found, no weights) is raised here, at once."""
    key = (str(spec["path"]), spec.get("revision"))
    with _HASHING:
        if key not in _FINGERPRINTS:
            folder = _model_dir(spec, phase)
            weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
            if not weights:
                raise ModelLoadError(phase, f"no *.safetensors or *.bin weights in {folder}")
            future: Future[Fingerprint] = Future()
            _FINGERPRINTS[key] = future
            threading.Thread(target=_hash_into, args=(future, folder, weights, spec.get("revision")),
                             name="runner-model-hash", daemon=False).start()
        return _FINGERPRINTS[key]


def _hash_into(future: Future[Fingerprint], folder: Path, weights: list[Path],
               revision: str | None) -> None:
    try:
        future.set_result(Fingerprint(
            path=str(folder),
            revision=revision,
            config_sha256=_sha256_files([folder / "config.json"]),
            weights_sha256=_sha256_files(weights),
            tokenizer_sha256=_sha256_files(
                [folder / n for n in _TOKENIZER_FILES if (folder / n).is_file()]
            ),
        ))
    except BaseException as exc:  # the caller's `result()` raises it
        future.set_exception(exc)


def model_fingerprint(spec: dict[str, Any], phase: str = "model") -> Fingerprint:
    """Hashes of the model's config, weights (safetensors) and tokenizer; loads no model."""
    return fingerprint_soon(spec, phase).result()


_TOKENIZERS: dict[tuple[str, str | None, bool], tuple[Any, bool]] = {}


def load_tokenizer(spec: dict[str, Any], phase: str = "model") -> Any:
    """The model's tokenizer with its chat template removed and left padding; memoised."""
    key = (str(spec["path"]), spec.get("revision"), bool(spec.get("trust_remote_code", False)))
    if key not in _TOKENIZERS:
        from transformers import AutoTokenizer  # noqa: PLC0415 - transformers loads in seconds; `validate` never needs it

        folder = _model_dir(spec, phase)
        tok = AutoTokenizer.from_pretrained(
            str(folder), local_files_only=True, trust_remote_code=key[2]
        )
        had_template = getattr(tok, "chat_template", None) is not None
        tok.chat_template = None  # removed, so nothing can ever apply it
        tok.padding_side = "left"  # generation appends on the right of every row
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token  # pad positions are masked out; the id is moot
        _TOKENIZERS[key] = (tok, had_template)
    return _TOKENIZERS[key][0]


_MODELS: dict[tuple[str, str | None, str, str, bool], LoadedModel] = {}
_LOADS = 0


def load_count() -> int:
    """How many models this process has really loaded (memo hits do not count)."""
    return _LOADS


def clear_models() -> None:
    """Forget every memoised model, tokenizer and fingerprint (tests; freeing memory)."""
    _MODELS.clear()
    _TOKENIZERS.clear()
    _FINGERPRINTS.clear()


def _sentinel(model: Any, tok: Any, device: torch.device) -> dict[str, Any]:
    from transformers import GenerationConfig  # noqa: PLC0415 - transformers loads in seconds; `validate` never needs it

    ids = torch.tensor(encode_prompts(tok, [SENTINEL_PROMPT]))
    config = GenerationConfig(
        max_new_tokens=_SENTINEL_TOKENS, do_sample=False,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )
    # Each of the sentinel's steps attends over a longer cache: a new shape every step, for
    # which cuDNN's attention builds a plan (58 ms on the H200, bench/probe_prefill_shapes.py);
    # under cProfile the sentinel's attention took 0.88 s of a model load there
    # (bench/RESULTS_issue15.md 2f). Flash, memory-efficient and math have no per-shape cost.
    with torch.inference_mode(), sdpa_kernel(_SENTINEL_ATTENTION):
        out = model.generate(
            ids.to(device), attention_mask=torch.ones_like(ids).to(device), generation_config=config
        )
    text = tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=False)
    found = role_markers(text)
    warning = f"chat role markers in the sentinel output: {found}" if found else None
    return {"prompt": SENTINEL_PROMPT, "output": text, "warning": warning}


def load_model(spec: dict[str, Any], phase: str = "model") -> LoadedModel:
    """Load (once per process) the base model `spec` names: path, dtype, device, revision."""
    global _LOADS
    key = _spec_key(spec, phase)
    if key in _MODELS:
        return _MODELS[key]
    from transformers import AutoModelForCausalLM  # noqa: PLC0415 - transformers loads in seconds; `validate` never needs it
    from transformers.utils import logging as hf_logging  # noqa: PLC0415 - as above

    hf_logging.disable_progress_bar()  # our console is for our own bars
    started = time.monotonic()
    device = resolve_device(spec.get("device"), phase)
    dtype = resolve_dtype(spec.get("dtype"), device, phase)
    hashing = fingerprint_soon(spec, phase)  # hashed on a thread while the model loads
    tok = load_tokenizer(spec, phase)
    had_template = _TOKENIZERS[(key[0], key[1], key[4])][1]
    model = AutoModelForCausalLM.from_pretrained(
        str(_model_dir(spec, phase)), dtype=dtype, local_files_only=True,
        trust_remote_code=key[4],
    )
    model.to(device).eval()  # type: ignore[arg-type]  # transformers types `to` through a decorator that hides its signature
    sentinel = _sentinel(model, tok, device)
    fp = hashing.result()
    provenance: dict[str, Any] = {
        "path": str(spec["path"]), "resolved_path": fp.path, "revision": fp.revision,
        "config_sha256": fp.config_sha256, "weights_sha256": fp.weights_sha256,
        "tokenizer_sha256": fp.tokenizer_sha256, "model_hash": fp.model_hash,
        "dtype": str(dtype).removeprefix("torch."), "device": str(device),
        "trust_remote_code": key[4],
        "chat_template_removed": had_template, "chat_template_applied": False,
        "bos_policy": f"prepend {tok.bos_token!r}" if tok.bos_token_id is not None else "none",
        "chat_denylist": sorted(chat_denylist(tok).values()),
        "sentinel": sentinel,
    }
    loaded = LoadedModel(model, tok, device, dtype, provenance, fp.model_hash, chat_denylist(tok))
    _MODELS[key] = loaded
    _LOADS += 1
    seconds = round(time.monotonic() - started, 3)
    _log.info("model_loaded", path=str(spec["path"]), model_hash=fp.model_hash,
              dtype=provenance["dtype"], device=str(device), seconds=seconds,
              chat_template_removed=had_template)
    if sentinel["warning"]:
        _log.warning("sentinel_chat_markers", path=str(spec["path"]),
                     output=sentinel["output"], warning=sentinel["warning"])
    return loaded
