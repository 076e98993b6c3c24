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
token is the label (`A` or `B`, each one token with its leading space). A critic header names
the labels through `{yes}` and `{no}` (`critic_header` fills them in), so the same header serves
both label assignments the debiased critic scores (`swapped`: yes = B, no = A).

`role_words`, `decorations` and `chat_markers` define what counts as a new example in *any*
common dialogue or prompt format (see `cleaning.py`): a line starting with a role or section
word followed by a colon, optionally decorated (`## Question:`, `**User:**`, `- A:`, `[Input]:`),
and chat-template tokens. A spec overrides them like every other field.
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
        "Is each line a clear, self-contained task? {yes} = yes, {no} = no.\n\n"
    )
    pair_critic_header: str = (
        "Does each answer do what its task asks? {yes} = yes, {no} = no.\n\n"
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
    # Words that open a new example in common dialogue/prompt formats when a line starts with
    # one (after optional decoration) followed by a colon; matched case-insensitively.
    role_words: tuple[str, ...] = (
        "Instruction", "Instructions", "Question", "Response", "Answer", "Input", "Output",
        "User", "Assistant", "Human", "System", "Q", "A", "Task", "Prompt", "Query", "AI",
    )
    # Regex of the decoration allowed before a role word: markdown headings, bold/italic,
    # list markers, numbering, brackets, blockquotes (and combinations of them).
    decorations: str = r"(?:#{1,6}[ \t]*|>[ \t]*|[-*+][ \t]+|\d{1,3}[.)][ \t]+|\*{1,2}|_{1,2}|\[)*"
    # Openings of a line that answers a task: inside an *instruction*, after its first line,
    # the model has answered its own task (matched case-insensitively after decoration).
    answer_openers: tuple[str, ...] = (
        "The answer is", "The correct answer is", "The right answer is", "Answer is",
        "The solution is",
    )
    # Chat-template and special-token strings: in a continuation they start a new turn.
    chat_markers: tuple[str, ...] = (
        "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>",
        "<|end_header_id|>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "[INST]",
        "[/INST]", "<<SYS>>", "<start_of_turn>", "<end_of_turn>", "</s>", "<s>",
    )

    def critic_header(self, kind: str) -> str:
        """The `instruction` or `pair` critic header with the labels filled in."""
        header = self.instruction_critic_header if kind == "instruction" else self.pair_critic_header
        yes, no = self.label_yes.strip(), self.label_no.strip()
        return header.replace("{yes}", yes).replace("{no}", no)

    def swapped(self) -> Templates:
        """The same templates with the yes and no labels exchanged (the debiasing order)."""
        return self.model_copy(update={"label_yes": self.label_no, "label_no": self.label_yes})


DEFAULT_TEMPLATES = Templates()
