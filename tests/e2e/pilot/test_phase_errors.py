"""The pilot's phase errors through the CLI: multi-token critic labels, chat contamination."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pilotlib import EXIT_FAILED, FIXTURES, instance, ok, runner, status, write_spec
from tokenizers import Tokenizer

pytestmark = pytest.mark.slow

LABELS = [" Alpha-yes", " B"]
CHAT_TOKEN = "<|im_start|>"


def _error_text(st: dict[str, Any], phase: str) -> str:
    """The phase's error and the run's failure, as one text."""
    return json.dumps([instance(st, phase, 1).get("error"), st.get("failure")], ensure_ascii=False)


def test_multi_token_label_fails_the_critic_naming_labels_and_tokens(tmp_path):
    """A critic label of several tokens fails the phase (exit 1), naming labels and tokens."""
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"id": f"x{n}", "instruction": f"Name {n} fruits."}) + "\n"
                             for n in range(3)))
    spec = write_spec(tmp_path / "labels.yaml", {
        "version": 1, "name": "labels", "seed": 7,
        "model": {"path": str(FIXTURES / "tiny-base")},
        "phases": [
            {"name": "items", "run": f'cp {shlex.quote(str(items))} "$RUNNER_OUTPUT_DIR/records.jsonl"'},
            {"name": "critic", "uses": "critic_filter",
             "with": {"source": "items", "kind": "instruction", "labels": LABELS}},
        ],
    })
    state = tmp_path / "state"
    ok(runner(state, "run", str(spec), "--run-id", "labels"), EXIT_FAILED)
    st = status(state, "labels")
    text = _error_text(st, "critic")
    tok = Tokenizer.from_file(str(FIXTURES / "tiny-base" / "tokenizer.json"))
    tokens = {label: tok.encode(label, add_special_tokens=False).tokens for label in LABELS}
    assert len(tokens[LABELS[0]]) > 1  # the premise: it is not one token
    missing = [repr(x) for label, toks in tokens.items() for x in (label, *toks) if repr(x) not in text]
    assert (st["status"], instance(st, "critic", 1)["status"], missing) == ("failed", "failed", []), text


@dataclass
class ChatRun:
    state_dir: Path
    rc: int
    status: dict[str, Any]

    def phase_dir(self, name: str) -> Path:
        return self.state_dir / "chat" / "phases" / f"{name}.i1"


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> ChatRun:
    """tiny-chat: a clean generator, then one whose few-shot file holds `<|im_start|>`."""
    root = tmp_path_factory.mktemp("chat")
    fewshot = root / "contaminated.jsonl"
    rows = ["Name three planets.", f"{CHAT_TOKEN}user Name two rivers.", "Explain why rain falls."]
    fewshot.write_text("".join(json.dumps({"instruction": r}) + "\n" for r in rows))
    small = {"count": 2, "oversample": 1.0, "max_new_tokens": 8, "batch_size": 2}
    spec = write_spec(root / "chat.yaml", {
        "version": 1, "name": "chat", "seed": 7,
        "model": {"path": str(FIXTURES / "tiny-chat")},
        "phases": [
            {"name": "generate_clean", "uses": "generate_instructions",
             "with": {**small, "fewshot": str(FIXTURES / "fewshot" / "instructions.jsonl")}},
            # shots: 3 of a pool of 3, so every prompt holds the contaminated example
            {"name": "generate_contaminated", "uses": "generate_instructions",
             "with": {**small, "shots": 3, "fewshot": str(fewshot)}},
        ],
    })
    state = root / "state"
    proc = runner(state, "run", str(spec), "--run-id", "chat")
    return ChatRun(state, proc.returncode, status(state, "chat"))


def test_contaminated_fewshot_fails_naming_token_and_prompt(chat_run):
    """A chat token in a few-shot instruction fails the generator (exit 1), naming it and the prompt."""
    text = _error_text(chat_run.status, "generate_contaminated")
    assert (chat_run.rc, instance(chat_run.status, "generate_contaminated", 1)["status"]) == \
        (EXIT_FAILED, "failed"), text
    assert CHAT_TOKEN in text and "generate_contaminated/i000000" in text, text


def test_clean_prompts_on_a_chat_tokenizer_pass(chat_run):
    """The same model with clean few-shot prompts generates: the check is not a blanket refusal."""
    inst = instance(chat_run.status, "generate_clean", 1)
    assert (inst["status"], inst["metrics"]["generated"]) == ("succeeded", 2)


def test_tiny_chat_provenance_says_chat_template_removed(chat_run):
    """The loader provenance (model.json) of a tiny-chat phase says the chat template was removed."""
    prov = json.loads((chat_run.phase_dir("generate_clean") / "model.json").read_text())
    assert (prov["chat_template_removed"], prov["chat_template_applied"]) == (True, False)
    assert CHAT_TOKEN in prov["chat_denylist"]
