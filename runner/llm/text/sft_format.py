"""The supervised fine-tuning text format: what `sft` trains on and `evaluate` prompts with.

One module owns it so the two phases can never drift apart: a tuned model asked in any other
format than the one it was trained on would be measured unfairly. The format is one example
of the completion-style response format of `templates.py`, without a header or few-shot
examples (the point of SFT is that the model no longer needs them):

    ### Instruction:\\n{instruction}\\n### Response:\\n      <- prompt (no loss on it)
    {response}\\n### End                                  <- completion (the loss is on it)

So a tuned model's answer ends with `\\n### End`, which the templates' stop strings
(`\\n###`) cut at, exactly as they cut a base model's few-shot answer. The instruction and
response are stripped of surrounding whitespace, as `prompts.response_prompt` strips the
pairs it shows, so the SFT prompt is byte for byte the tail of the base model's few-shot
prompt for the same instruction.
"""

from __future__ import annotations

from runner.llm.text.templates import DEFAULT_TEMPLATES, Templates

__all__ = ["sft_completion", "sft_example", "sft_prompt"]


def sft_prompt(instruction: str, templates: Templates = DEFAULT_TEMPLATES) -> str:
    """The prompt of one instruction: instruction tag, text, newline, response tag."""
    return f"{templates.instruction_tag}{instruction.strip()}\n{templates.response_tag}"


def sft_completion(response: str, templates: Templates = DEFAULT_TEMPLATES) -> str:
    """What the model must write after the prompt: the response, newline, end tag."""
    return f"{response.strip()}\n{templates.end_tag}"


def sft_example(
    instruction: str, response: str, templates: Templates = DEFAULT_TEMPLATES
) -> tuple[str, str]:
    """One training example as (prompt, completion); the loss belongs on the completion."""
    return sft_prompt(instruction, templates), sft_completion(response, templates)
