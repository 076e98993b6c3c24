"""The SFT text format that `sft` trains on and `evaluate` prompts the tuned model with."""

from runner.llm.text.cleaning import cut
from runner.llm.text.prompts import response_prompt
from runner.llm.text.sft_format import sft_example, sft_prompt
from runner.llm.text.templates import DEFAULT_TEMPLATES as T


def test_sft_prompt_is_instruction_tag_text_response_tag():
    """The prompt is the instruction tag, the instruction, a newline and the response tag."""
    assert sft_prompt("Name a river.") == "### Instruction:\nName a river.\n### Response:\n"


def test_sft_example_completion_ends_with_end_tag():
    """The completion is the response, a newline and the end tag."""
    assert sft_example("Name a river.", "The Nile.") == (
        "### Instruction:\nName a river.\n### Response:\n", "The Nile.\n### End")


def test_sft_prompt_is_the_tail_of_the_base_fewshot_prompt():
    """The base model's few-shot prompt ends with exactly the SFT prompt of its instruction."""
    shots = [("Name a fruit.", "An apple.")]
    assert response_prompt(shots, "Name a river.", T).endswith(sft_prompt("Name a river.", T))


def test_stop_strings_cut_the_completion_back_to_the_response():
    """A tuned model that writes the completion is cut back to exactly the response."""
    _, completion = sft_example("Name a river.", "The Nile.\nIt is long.")
    assert cut(completion, T)[0] == "The Nile.\nIt is long."
