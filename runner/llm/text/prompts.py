"""Completion-style prompt builders of Stage 1 (no chat template, ever).

Every prompt is plain text in the format of `templates.py` (the format the fixture model's
corpus, `scripts/tiny_corpus.py`, is written in): examples are separated by
`example_separator` (a blank line); inside one example its parts are joined by a single
newline; the prompt ends on an open tag, so the model's continuation is the body we want and
the next `\n###` / `\n\n###` is where it should stop:

    instruction_prompt   header, (Instruction:text SEP)*, Instruction:
    response_prompt      header, (Instruction:text NL Response:text NL End SEP)*,
                         Instruction:text NL Response:
    instruction_critic   header, (Instruction:text NL Answer:label SEP)*,
                         Instruction:text NL Answer:
    pair_critic          header, (Instruction:text NL Response:text NL Answer:label SEP)*,
                         Instruction:text NL Response:text NL Answer:

Few-shot examples come from a JSONL file named in the phase's `with: fewshot:` (relative to the
spec's folder): one object per line with `instruction`, and where needed `response` and a
critic label (`label: A|B` or `accept: true|false`). Which examples a prompt shows is drawn
by `pick_shots` from a generator seeded by the batch seed and the row, so a prompt depends only
on its batch and a resumed batch rebuilds the very same prompts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runner.errors import PhaseError
from runner.llm.text.templates import DEFAULT_TEMPLATES, Templates
from runner.store.batches import row_seed

__all__ = [
    "critic_prompt",
    "example_accepted",
    "instruction_critic_prompt",
    "instruction_prompt",
    "load_fewshot",
    "pair_critic_prompt",
    "pick_balanced",
    "pick_shots",
    "read_fewshot",
    "response_prompt",
    "templates_from",
]


def templates_from(
    overrides: dict[str, Any] | None, phase: str, labels: list[str] | None = None
) -> Templates:
    """The default templates with the spec's overrides (and critic labels) applied."""
    fields = dict(overrides or {})
    if labels is not None:
        fields["label_yes"], fields["label_no"] = labels[0], labels[1]
    try:
        return Templates(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"templates.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise PhaseError(phase, problems) from None


def read_fewshot(file: Path, require: tuple[str, ...], labelled: bool = False) -> list[dict[str, Any]]:
    """The examples of a few-shot JSONL file; ValueError saying what is wrong with it.

    Each line must be a JSON object with the `require`d keys; `labelled` (a critic's file)
    also needs `label` (A/B) or `accept` (true/false) on every example.
    """
    if not file.is_file():
        raise ValueError(f"few-shot file not found: {file}")
    examples: list[dict[str, Any]] = []
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read few-shot file {file}: {exc}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{file}:{lineno}: not JSON: {exc.msg}") from None
        missing = [k for k in require if not isinstance(obj, dict) or k not in obj]
        if missing:
            raise ValueError(f"{file}:{lineno}: missing key(s) {', '.join(missing)}")
        if labelled and "label" not in obj and "accept" not in obj:
            raise ValueError(f"{file}:{lineno}: a critic's example needs `label` (A/B) or "
                             "`accept` (true/false)")
        examples.append(obj)
    if not examples:
        raise ValueError(f"few-shot file {file} holds no examples")
    return examples


def load_fewshot(
    path: str | Path, base_dir: Path | None, require: tuple[str, ...], phase: str,
    labelled: bool = False,
) -> list[dict[str, Any]]:
    """The few-shot examples of a JSONL file; each line must hold the `require`d keys."""
    file = Path(path).expanduser()
    if not file.is_absolute() and base_dir is not None:
        file = Path(base_dir) / file
    try:
        return read_fewshot(file, require, labelled)
    except ValueError as exc:
        raise PhaseError(phase, str(exc)) from None


def pick_shots(pool: list[dict[str, Any]], shots: int, seed: int, row: int) -> list[dict[str, Any]]:
    """`shots` distinct examples of `pool` (all of them if fewer), drawn for (batch seed, row)."""
    k = max(0, min(int(shots), len(pool)))
    return random.Random(row_seed(seed, row, "shots")).sample(pool, k)


def pick_balanced(
    pool: list[dict[str, Any]],
    accepted: list[bool],
    shots: int,
    seed: int,
    row: int,
    exclude: int | None = None,
) -> list[dict[str, Any]]:
    """Labelled critic shots for (seed, row): as many accepted as rejected examples.

    `shots // 2` of each (one more accepted when `shots` is odd), fewer when a side runs
    out, in an order shuffled per row, so no label follows a fixed position; the pool item
    at index `exclude` is never drawn (a held-out probe item is not shown as its own example).
    """
    rng = random.Random(row_seed(seed, row, "balanced-shots"))
    sides = [[ex for n, ex in enumerate(pool) if accepted[n] is ok and n != exclude]
             for ok in (True, False)]
    want = (shots - shots // 2, shots // 2)
    picked = [ex for side, k in zip(sides, want) for ex in rng.sample(side, min(k, len(side)))]
    rng.shuffle(picked)
    return picked


def example_accepted(example: dict[str, Any], t: Templates) -> bool:
    """A critic example's label: `accept: bool`, or `label` equal to the yes label (A)."""
    if "accept" in example:
        return bool(example["accept"])
    return str(example.get("label", "")).strip() == t.label_yes.strip()


def _pair(t: Templates, instruction: str, response: str) -> str:
    # Inside one example the parts are joined by a single newline, as the fixture corpus is.
    return f"{t.instruction_tag}{instruction.strip()}\n{t.response_tag}{response.strip()}\n"


def instruction_prompt(examples: list[str], t: Templates = DEFAULT_TEMPLATES) -> str:
    """Few-shot instruction generation: the model writes the next instruction."""
    blocks = "".join(t.instruction_tag + e.strip() + t.example_separator for e in examples)
    return t.instruction_header + blocks + t.instruction_tag


def response_prompt(
    pairs: list[tuple[str, str]], instruction: str, t: Templates = DEFAULT_TEMPLATES
) -> str:
    """Few-shot response generation: the model answers `instruction`."""
    blocks = "".join(_pair(t, i, r) + t.end_tag + t.example_separator for i, r in pairs)
    return f"{t.response_header}{blocks}{t.instruction_tag}{instruction.strip()}\n{t.response_tag}"


def _critic(t: Templates, kind: str, bodies: list[tuple[str, bool]], body: str) -> str:
    label = {True: t.label_yes, False: t.label_no}
    blocks = "".join(b + t.answer_tag + label[ok] + t.example_separator for b, ok in bodies)
    return t.critic_header(kind) + blocks + body + t.answer_tag


def instruction_critic_prompt(
    examples: list[tuple[str, bool]], instruction: str, t: Templates = DEFAULT_TEMPLATES
) -> str:
    """A/B critic of one instruction; the next token is the label."""
    body = lambda text: f"{t.instruction_tag}{text.strip()}\n"  # noqa: E731
    shots = [(body(i), ok) for i, ok in examples]
    return _critic(t, "instruction", shots, body(instruction))


def pair_critic_prompt(
    examples: list[tuple[str, str, bool]],
    instruction: str,
    response: str,
    t: Templates = DEFAULT_TEMPLATES,
) -> str:
    """A/B critic of one instruction+response pair; the next token is the label."""
    shots = [(_pair(t, i, r), ok) for i, r, ok in examples]
    return _critic(t, "pair", shots, _pair(t, instruction, response))


def critic_prompt(
    kind: str, shots: list[dict[str, Any]], item: dict[str, Any], t: Templates = DEFAULT_TEMPLATES
) -> str:
    """The `instruction` or `pair` critic prompt of `item` with labelled few-shot `shots`."""
    if kind == "instruction":
        examples = [(e["instruction"], example_accepted(e, t)) for e in shots]
        return instruction_critic_prompt(examples, item["instruction"], t)
    pairs = [(e["instruction"], e["response"], example_accepted(e, t)) for e in shots]
    return pair_critic_prompt(pairs, item["instruction"], item["response"], t)
