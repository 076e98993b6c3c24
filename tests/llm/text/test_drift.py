"""Format drift counts as runaway: marker lines of any common format, chat and special tokens."""

import pytest

from runner.llm.text.cleaning import classify, drift_marker
from runner.llm.text.templates import DEFAULT_TEMPLATES as T
from runner.llm.text.templates import Templates

RUNAWAYS = [
    "...when you call today.\n## Question: Whoever makes no sound",
    "doing something right. \n\n## Instruction:\nNamely for my blog",
    "Fine.\n**User:** and now?",
    "Fine.\n**Answer**: 42",
    "Fine.\n- Q: why?",
    "Fine.\n* A: because",
    "Fine.\n1. Question: why?",
    "Fine.\n[Input]: 3",
    "Fine.\n> **Assistant:** hi",
    "Fine.\nHuman: tell me more",
    "Fine.\n  assistant: sure",
    "Fine.\nOutput: 7",
    "Fine.<|im_start|>user",
    "Fine. [INST] more [/INST]",
    "Fine.<|eot_id|>",
]
CLEAN = [
    "Answer: 42",  # the first line is exempt: the answer opens with it
    "## Answer: 42\nBecause six times seven is 42.",
    "Questions like this one are common:\nthey ask for facts.",
    "Note: the sea is salty.\nNote: rivers carry salt.",
    "Step 1: boil water.\nStep 2: add tea.",
    "A cat: small and soft.\nA dog: loyal and loud.",
    "Answering quickly is good.\nAnswers vary.",
    "Time: 3 pm.\nPlace: the old bridge.",
    "It costs 5 dollars.\nA: is the first letter.",  # "A:" here is a label, but see below
]


@pytest.mark.parametrize("text", RUNAWAYS)
def test_marker_lines_and_tokens_are_runaway(text):
    """A marker line after the first line, or a chat token anywhere, is a runaway."""
    assert classify(text, "eos", T, "response").cls == "runaway"


@pytest.mark.parametrize("text", CLEAN[:-1])
def test_legitimate_lines_stay_clean(text):
    """Role words without a colon, other words with one, and a first-line marker are clean."""
    assert classify(text, "eos", T, "response").cls == "clean"


def test_bare_a_colon_after_the_first_line_counts():
    """`A:` opening a later line is the Q/A format's answer marker: runaway by definition."""
    assert drift_marker(CLEAN[-1], T) == "A: is the first letter."


def test_model_special_tokens_count():
    """A special token of the model itself (passed by the phase) marks a runaway."""
    text = "Fine.<|custom_turn|>more"
    assert (classify(text, "eos", T, "response").cls,
            classify(text, "eos", T, "response", ("<|custom_turn|>",)).cls) == ("clean", "runaway")


def test_instruction_kind_uses_the_same_markers():
    """An instruction that runs on into `Question:` is a runaway too."""
    assert classify("Name a fruit.\nQuestion: and a colour?", "eos", T, "instruction").cls == "runaway"


def test_spec_can_override_role_words():
    """With role_words overridden, only those words (and the template's tags) mark drift."""
    t = Templates(role_words=("Frage",))
    assert (drift_marker("ok\nFrage: was?", t), drift_marker("ok\nQuestion: what?", t)) == (
        "Frage: was?", None)


def test_spec_can_override_chat_markers():
    """An empty chat_markers list turns token detection off."""
    assert drift_marker("Fine.<|im_start|>", Templates(chat_markers=())) is None


def test_template_tag_names_always_count():
    """The template's own bare tag names mark drift even when role_words is emptied."""
    assert drift_marker("ok\nResponse: x", Templates(role_words=())) == "Response: x"


def test_response_asking_a_new_question_is_runaway():
    """A later paragraph that ends in a question starts a new example."""
    text = "It is blue.\n\n*Also answer this question\n    What is 9 x 6?"
    assert classify(text, "eos", T, "response").cls == "runaway"


def test_question_in_the_first_paragraph_is_clean():
    """A rhetorical question inside the answer's own paragraph is content."""
    assert classify("Why is it blue? Light scatters.", "eos", T, "response").cls == "clean"


def test_instruction_that_answers_itself_is_runaway():
    """An instruction followed by `The answer is ...` on a later line ran on into its answer."""
    text = "How many calories can you burn in one hour?\nThe answer is 2015."
    assert classify(text, "eos", T, "instruction").cls == "runaway"


def test_response_may_say_the_answer_is():
    """In a response, `The answer is` on a later line is the answer itself: clean."""
    assert classify("Six times seven.\nThe answer is 42.", "eos", T, "response").cls == "clean"
