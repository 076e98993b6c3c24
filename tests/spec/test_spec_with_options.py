"""`runner validate` checks each phase's `with:` under its model: one test per class of mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.errors import SpecProblem
from runner.spec import load_spec

REPO = Path(__file__).resolve().parents[2]

# Line numbers matter below: `answer`'s `temperature` is on line 23, its `fewshot` on 24.
STAGE1 = """\
version: 1
name: s1
params:
  response:
    temperature: 0.7
  threshold: 0.5
phases:
  - name: gen
    uses: generate_instructions
    with:
      count: 4
      fewshot: instructions.jsonl
  - name: critic
    uses: critic_filter
    with:
      source: gen
      kind: instruction
      confidence_threshold: ${params.threshold}
  - name: answer
    uses: generate_responses
    with:
      source: critic
      temperature: ${params.response.temperature}
      fewshot: pairs.jsonl
"""


@pytest.fixture
def stage1(tmp_path: Path) -> str:
    """STAGE1 with its two few-shot files beside it."""
    (tmp_path / "instructions.jsonl").write_text(json.dumps({"instruction": "Sing."}) + "\n")
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"instruction": "Sing.", "response": "La."}) + "\n")
    return STAGE1


def test_the_stage1_spec_is_valid(stage1: str, write: Callable[..., Path]) -> None:
    """The base spec of these tests passes, so each test's problem is its own edit."""
    assert load_spec(write(stage1)).phase_names == ["gen", "critic", "answer"]


def test_unknown_key_is_located_with_did_you_mean(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """A misspelt `with:` key of a built-in phase: at its line, with a did-you-mean."""
    p = one(stage1.replace("      temperature: $", "      temperatur: $"))
    assert (p.line, p.col, p.path) == (23, 7, "phases[2].with.temperatur")
    assert "did you mean 'temperature'?" in p.message


def test_wrong_type_is_refused(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """A count written as text is a type error at its value."""
    p = one(stage1.replace("count: 4", "count: 'four'"))
    assert (p.line, p.path) == (11, "phases[0].with.count") and "expected a whole number" in p.message


def test_out_of_range_is_refused(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """top_p must lie in (0, 1]."""
    p = one(stage1.replace("      count: 4\n", "      count: 4\n      top_p: 1.5\n"))
    assert p.path == "phases[0].with.top_p" and "less than or equal to 1" in p.message


def test_bad_kind_is_refused_with_did_you_mean(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """A critic's kind is instruction or pair."""
    p = one(stage1.replace("kind: instruction", "kind: pairs"))
    assert (p.line, p.path) == (17, "phases[1].with.kind") and "did you mean 'pair'?" in p.message


def test_source_naming_a_later_phase_is_refused(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """`source` must name a phase that runs before this one."""
    p = one(stage1.replace("source: gen", "source: answer"))
    assert p.path == "phases[1].with.source" and "does not run before this one" in p.message


def test_source_naming_no_phase_is_refused(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """A misspelt `source` gets a did-you-mean from the earlier phases."""
    p = one(stage1.replace("source: critic", "source: critc"))
    assert p.path == "phases[2].with.source" and "did you mean 'critic'?" in p.message


def test_source_outside_declared_inputs_is_refused(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """With `inputs:` declared, `source` must be one of them (ctx.input refuses the rest)."""
    p = one(stage1.replace("    uses: generate_responses\n", "    uses: generate_responses\n    inputs: [gen]\n"))
    assert p.path == "phases[2].with.source" and "not in this phase's inputs" in p.message


def test_missing_fewshot_file_is_refused(stage1: str, one: Callable[..., SpecProblem], tmp_path: Path) -> None:
    """A few-shot file that does not exist, relative to the spec's folder."""
    (tmp_path / "pairs.jsonl").unlink()
    p = one(stage1)
    assert (p.line, p.path) == (24, "phases[2].with.fewshot") and "few-shot file not found" in p.message


def test_unparsable_fewshot_file_is_refused(stage1: str, one: Callable[..., SpecProblem], tmp_path: Path) -> None:
    """A few-shot file with a line that is not JSON names the file and line."""
    (tmp_path / "instructions.jsonl").write_text('{"instruction": "Sing."}\n{oops\n')
    p = one(stage1)
    assert p.path == "phases[0].with.fewshot" and "instructions.jsonl:2: not JSON" in p.message


def test_fewshot_missing_a_key_is_refused(stage1: str, one: Callable[..., SpecProblem], tmp_path: Path) -> None:
    """A response generator's examples need a response."""
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"instruction": "Sing."}) + "\n")
    p = one(stage1)
    assert p.path == "phases[2].with.fewshot" and "missing key(s) response" in p.message


def test_bad_value_via_set_names_the_set(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """A value out of range that came from --set is reported against that --set."""
    p = one(stage1, ["response.temperature=-1"])
    assert str(p).startswith("--set: response.temperature: input should be greater than or equal to 0")
    assert "phases[2].with.temperature" in p.message


def test_bad_value_from_params_points_at_params(stage1: str, one: Callable[..., SpecProblem]) -> None:
    """A bad value written in `params` and used through ${params.x} is reported where it was written."""
    p = one(stage1.replace("threshold: 0.5", "threshold: 1.5"))
    assert (p.line, p.path) == (6, "params.threshold") and "phases[1].with.confidence_threshold" in p.message


def test_every_problem_is_reported_at_once(stage1: str, problems: Callable[..., list[SpecProblem]]) -> None:
    """The issue's demo: a misspelt key and a bad kind, both, in file order."""
    found = problems(stage1.replace("kind: instruction", "kind: pairs").replace("      temperature: $", "      temperatur: $"))
    assert [p.path for p in found] == ["phases[1].with.kind", "phases[2].with.temperatur"]


def test_nested_lora_key_and_steps_with_epochs(problems: Callable[..., list[SpecProblem]]) -> None:
    """sft: a misspelt lora key and steps with epochs, each located."""
    found = problems("""\
        version: 1
        name: t
        phases:
          - name: sft
            uses: sft
            with: {lora: {alhpa: 8}, steps: 2, epochs: 1}
        """)
    assert {p.path: p.message for p in found} == {
        "phases[0].with.lora.alhpa": "unknown key 'alhpa'; did you mean 'alpha'?",
        "phases[0].with.epochs": "give steps or epochs, not both",
    }


def test_qc_role_that_does_not_exist(problems: Callable[..., list[SpecProblem]]) -> None:
    """qc's `phases:` maps known roles to earlier phases: a bad role is reported at the key."""
    found = problems("""\
        version: 1
        name: t
        phases:
          - name: gen
            run: echo
          - name: qc
            uses: qc
            with: {phases: {instruction: gen}}
        """)
    assert [p.path for p in found] == ["phases[1].with.phases.instruction"]
    assert "'instruction'" in found[0].message and "did you mean 'instructions'?" in found[0].message


def test_user_phase_model_gets_the_same_checks(write: Callable[..., Path], problems: Callable[..., list[SpecProblem]]) -> None:
    """A user function with `fn.options = Model` gets unknown-key and range checks."""
    write("""\
        from pydantic import BaseModel, ConfigDict, Field

        class Opts(BaseModel):
            model_config = ConfigDict(extra="forbid")
            rate: float = Field(ge=0, le=1)

        def work(ctx):
            return {}

        work.options = Opts
        """, name="userphase.py")
    found = problems("""\
        version: 1
        name: t
        phases:
          - name: work
            uses: userphase:work
            with: {rate: 2, rat: 1}
        """)
    assert [(p.path, p.message.split(";")[0]) for p in found] == [
        ("phases[0].with.rate", "input should be less than or equal to 1, got 2"),
        ("phases[0].with.rat", "unknown key 'rat'"),
    ]


def test_user_phase_options_that_is_not_a_model(write: Callable[..., Path], one: Callable[..., SpecProblem]) -> None:
    """`fn.options` that is not a pydantic model class is a problem at `uses`, not a crash."""
    write("def work(ctx):\n    return {}\n\nwork.options = {'rate': float}\n", name="userphase2.py")
    p = one("""\
        version: 1
        name: t
        phases:
          - name: work
            uses: userphase2:work
        """)
    assert p.path == "phases[0].uses" and "pydantic model class" in p.message


def test_validate_does_not_import_torch() -> None:
    """Checking every built-in phase's `with:` loads no model code: torch is never imported."""
    code = ("import sys; from runner.spec import load_spec; "
            "[load_spec(f) for f in ('specs/demo.yaml', 'specs/demo_full.yaml')]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
