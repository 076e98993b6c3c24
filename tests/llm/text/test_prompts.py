"""Completion-style prompt builders, few-shot files and template overrides."""

import json
import sys
from pathlib import Path

import pytest

from runner.errors import PhaseError
from runner.llm.text.prompts import (
    instruction_critic_prompt,
    instruction_prompt,
    load_fewshot,
    pair_critic_prompt,
    pick_shots,
    response_prompt,
    templates_from,
)
from runner.llm.text.templates import DEFAULT_TEMPLATES as T

sys.path.append(str(Path(__file__).resolve().parents[3] / "scripts"))


def test_instruction_prompt_ends_on_open_tag():
    """The instruction prompt lists examples and ends on an open `### Instruction:` tag."""
    text = instruction_prompt(["Sing.", "Dance."])
    assert text == T.instruction_header + "### Instruction:\nSing.\n\n### Instruction:\nDance.\n\n### Instruction:\n"


def test_response_prompt_ends_on_open_response():
    """Each example pair is closed by `### End`; the prompt ends on `### Response:`."""
    text = response_prompt([("Sing.", "La la.")], "Dance.")
    assert text.endswith("### Response:\nLa la.\n### End\n\n### Instruction:\nDance.\n### Response:\n")


def test_instruction_critic_prompt_ends_on_answer_tag():
    """The critic prompt shows labelled examples and ends on `### Answer:`."""
    text = instruction_critic_prompt([("Sing.", True), ("zz", False)], "Dance.")
    assert text.endswith("### Answer: A\n\n### Instruction:\nzz\n### Answer: B\n\n### Instruction:\nDance.\n### Answer:")


def test_pair_critic_prompt_shows_response():
    """The pair critic prompt holds the instruction and the response before the answer."""
    text = pair_critic_prompt([], "Dance.", "Step.")
    assert text == T.critic_header("pair") + "### Instruction:\nDance.\n### Response:\nStep.\n### Answer:"


def test_pick_shots_depends_only_on_seed_and_row():
    """The same (seed, row) draws the same examples; the draw is of `shots` distinct ones."""
    pool = [{"instruction": str(i)} for i in range(10)]
    shots = pick_shots(pool, 3, 7, 2)
    assert shots == pick_shots(pool, 3, 7, 2) and len({e["instruction"] for e in shots}) == 3


def test_pick_shots_varies_by_row():
    """Different rows of a batch see different example draws."""
    pool = [{"instruction": str(i)} for i in range(10)]
    assert [pick_shots(pool, 3, 7, r) for r in range(4)] != [pick_shots(pool, 3, 7, 0)] * 4


def test_load_fewshot_resolves_against_spec_dir(tmp_path):
    """A relative few-shot path is read from the spec's folder."""
    (tmp_path / "f.jsonl").write_text(json.dumps({"instruction": "Sing."}) + "\n")
    assert load_fewshot("f.jsonl", tmp_path, ("instruction",), "p") == [{"instruction": "Sing."}]


def test_load_fewshot_missing_key_names_line(tmp_path):
    """A line without a required key fails naming file, line and key."""
    (tmp_path / "f.jsonl").write_text('{"instruction": "a"}\n{"x": 1}\n')
    with pytest.raises(PhaseError, match=r"f.jsonl:2: missing key\(s\) instruction"):
        load_fewshot("f.jsonl", tmp_path, ("instruction",), "p")


def test_templates_override_applies():
    """A spec's template override replaces that field only."""
    t = templates_from({"end_tag": "### Stop"}, "p")
    assert (t.end_tag, t.instruction_tag) == ("### Stop", T.instruction_tag)


def test_templates_unknown_key_fails():
    """An unknown template field is a phase error naming it."""
    with pytest.raises(PhaseError, match=r"templates\.end_tga"):
        templates_from({"end_tga": "x"}, "p")


def test_prompts_match_the_fixture_corpus():
    """The builders emit exactly the shapes the tiny fixture model is trained on."""
    corpus = pytest.importorskip("tiny_corpus", reason="scripts/tiny_corpus.py not present")
    pair = corpus.qa_body("Sing.", "La la.")
    ours = (response_prompt([("Sing.", "La la.")], "Dance."),
            pair_critic_prompt([("Sing.", "La la.", True)], "x", "y"))
    theirs = (corpus.response_prompt([("Sing.", "La la.")], "Dance."),
              corpus.critic_prompt(T.critic_header("pair"), [(pair, True)], corpus.qa_body("x", "y")))
    assert ours == theirs


def test_critic_header_names_the_labels():
    """The header names yes/no with the labels; swapped templates name them the other way."""
    assert ("A = yes, B = no" in T.critic_header("pair"),
            "B = yes, A = no" in T.swapped().critic_header("pair")) == (True, True)


def test_swapped_prompt_labels_examples_the_other_way():
    """In the swapped order an accepted example is labelled B."""
    text = pair_critic_prompt([("Sing.", "La.", True)], "x", "y", T.swapped())
    assert "### Answer: B\n\n" in text


def test_pick_balanced_draws_as_many_accepted_as_rejected():
    """Four shots from a balanced pool: two accepted and two rejected, order drawn per row."""
    from runner.llm.text.prompts import pick_balanced

    pool = [{"instruction": str(i), "accept": i % 2 == 0} for i in range(20)]
    flags = [e["accept"] for e in pool]
    draws = [pick_balanced(pool, flags, 4, 11, row) for row in range(20)]
    assert all(sum(e["accept"] for e in d) == 2 and len(d) == 4 for d in draws)
    assert len({tuple(e["accept"] for e in d) for d in draws}) > 1  # label order varies


def test_pick_balanced_excludes_the_held_out_item():
    """The excluded pool item is never shown."""
    from runner.llm.text.prompts import pick_balanced

    pool = [{"instruction": str(i), "accept": i < 3} for i in range(6)]
    flags = [e["accept"] for e in pool]
    assert all(pool[0] not in pick_balanced(pool, flags, 4, 5, row, exclude=0) for row in range(30))
