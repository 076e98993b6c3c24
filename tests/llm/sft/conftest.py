"""Fixtures of the SFT tests: the tiny base model of `fixtures/`, real pairs, real models.

No mocks: tests train real LoRA adapters on `fixtures/tiny-base` (CPU, float32) with pairs
from the procedural corpus the fixture model was trained on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

# Tiny models gain nothing from intra-op threads on a shared 2-core machine.
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from sfthelpers import TINY_BASE, make_records  # noqa: E402


@pytest.fixture(scope="session")
def records_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JSONL file of 64 records, standing for the output of a phase named `pairs`."""
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_records(64)))
    return path


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The tiny base model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_BASE), local_files_only=True)


@pytest.fixture(scope="session")
def base_model() -> Any:
    """The tiny base model in float32, eval mode (no dropout), sdpa attention."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(TINY_BASE), dtype=torch.float32, attn_implementation="sdpa", local_files_only=True)
    return model.eval()
