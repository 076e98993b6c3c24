"""Fixtures of the llm tests: tiny real models, a few-shot file and a local run folder.

No mocks: the phases run on real (tiny, random-initialised) models and real files, through
the `ctx` stand-in of `localctx.py`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# The tiny models gain nothing from intra-op threads, and on a busy 2-core machine thread
# wake-ups dominate each small op; one thread keeps the tests fast and steady.
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

from localctx import LocalRun  # noqa: E402
from tiny import build_tiny_model  # noqa: E402

from runner.llm.loading import loader  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-initialised Llama with a byte-level BPE tokenizer (no chat template)."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same with ChatML special tokens and a chat template."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-chat", chat=True)


@pytest.fixture
def fresh_loader() -> Iterator[None]:
    """Forget memoised models before and after the test."""
    loader.clear_models()
    yield
    loader.clear_models()


@pytest.fixture
def fewshot(tmp_path: Path) -> Path:
    """A few-shot JSONL file with instructions, responses and critic labels."""
    rows = [
        {"instruction": "Write a short poem about the sea.", "response": "Waves roll in.", "label": "A"},
        {"instruction": "Name three fruits.", "response": "Apple, pear, plum.", "label": "A"},
        {"instruction": "blue blue blue", "response": "sky", "label": "B"},
        {"instruction": "Explain why the sky is blue.", "response": "Rayleigh scattering.", "label": "A"},
        {"instruction": "the the", "response": "", "label": "B"},
    ]
    path = tmp_path / "spec" / "fewshot.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def local_run(tmp_path: Path, tiny_model: Path, fewshot: Path) -> LocalRun:
    """A run folder on the tiny model whose spec folder holds `fewshot.jsonl`."""
    return LocalRun(tmp_path / "run", {"path": str(tiny_model)}, spec_dir=fewshot.parent)
