"""Default completion-style templates and delimiters of the Stage-1 prompts.

One place defines the text format that the prompt builders write, that the cleaning code cuts
at, and that `scripts/build_tiny_base.py` trains the tiny fixture model on, so the three can
never drift apart. A spec may override every field (`with: {templates: {...}}` on a phase).

Format of a few-shot instruction-generation prompt (the model continues after the last
`### Instruction:` line and should stop at the next blank line + delimiter):

    Below are examples of tasks that people ask a helpful assistant to do.

    ### Instruction:
    Write a short poem about the sea.

    ### Instruction:
    ...

A response-generation prompt repeats `### Instruction:` / `### Response:` pairs, each pair
closed by `### End`. Critic prompts show labelled examples and end in `### Answer:`; the next
token is the label (`A` or `B`, each one token with its leading space).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["DEFAULT_TEMPLATES", "Templates"]


class Templates(BaseModel):
    """Every string the Stage-1 prompts are built from; all overridable in a spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction_header: str = (
        "Below are examples of tasks that people ask a helpful assistant to do.\n\n"
    )
    response_header: str = "Below are tasks and the answers a helpful assistant gave.\n\n"
    instruction_critic_header: str = (
        "Is each line a clear, self-contained task? A = yes, B = no.\n\n"
    )
    pair_critic_header: str = (
        "Does each answer do what its task asks? A = yes, B = no.\n\n"
    )
    instruction_tag: str = "### Instruction:\n"
    response_tag: str = "### Response:\n"
    answer_tag: str = "### Answer:"
    end_tag: str = "### End"
    example_separator: str = "\n\n"
    label_yes: str = " A"
    label_no: str = " B"
    # Cleaning cuts a generation at the first of these; seeing one of the tags *inside* the
    # kept text means the model ran on into another example (runaway).
    stop_strings: tuple[str, ...] = ("\n\n###", "### End", "\n###")


DEFAULT_TEMPLATES = Templates()
