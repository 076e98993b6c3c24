"""Keep chat formatting out of base-model prompts.

Stage 1 works from BASE models with completion-style prompts. A chat marker in a prompt
(`<|im_start|>`, `[INST]`, ...) silently turns the job into chat prompting of a model that was
never tuned for it, or, worse, of a tuned model passed off as a base one. So:

* the **denylist** of a tokenizer is every token of its vocabulary that is an added or special
  token other than BOS/EOS/PAD/UNK, plus each string of `CHAT_MARKERS` that the vocabulary
  holds as one token (a plain BPE vocabulary that spells `[INST]` in pieces has no such token,
  and text that merely mentions it is no contamination);
* `check_token_ids` fails the phase with `ContaminationError`, naming the token and the
  prompt's id, when a tokenized prompt contains a denylisted id;
* `role_markers` finds chat role markers in generated text (the loader's sentinel test).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from runner.errors import PhaseError

__all__ = [
    "CHAT_MARKERS",
    "ContaminationError",
    "chat_denylist",
    "check_token_ids",
    "role_markers",
]

# Chat-format markers of the common template families (ChatML, Llama 2 and 3, Gemma, Phi,
# Zephyr). Matched as whole vocabulary entries by `chat_denylist` and as text by
# `role_markers`.
CHAT_MARKERS: tuple[str, ...] = (
    "<|im_start|>",
    "<|im_end|>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
)

# Role markers in generated text: any chat marker, or a role name opening a line the way chat
# transcripts do ("assistant:", "<|assistant|>", "user\n" right after a marker).
_ROLE_RE = re.compile(
    "|".join(re.escape(m) for m in CHAT_MARKERS)
    + r"|^[ \t]*(?:assistant|user|system)[ \t]*:",
    re.IGNORECASE | re.MULTILINE,
)


class ContaminationError(PhaseError):
    """A tokenized prompt holds a chat-format token; names the token and the prompt id."""

    def __init__(self, phase: str, token: str, token_id: int, prompt_id: str) -> None:
        self.token = token
        self.token_id = token_id
        self.prompt_id = prompt_id
        super().__init__(
            phase,
            f"prompt '{prompt_id}' contains the chat-format token {token!r} (id {token_id}); "
            "base-model prompts must be plain completion text: remove it from the few-shot "
            "file, templates or source records",
        )


def chat_denylist(tokenizer: Any) -> dict[int, str]:
    """Token id -> token text of every chat-format token present in `tokenizer`'s vocabulary."""
    allowed = {
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
        tokenizer.unk_token_id,
    }
    deny: dict[int, str] = {}
    # Added tokens (special or not) are how chat markers enter a vocabulary.
    for token_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if token_id not in allowed:
            deny[int(token_id)] = str(added)
    for token_id, token in zip(tokenizer.all_special_ids, tokenizer.all_special_tokens):
        if token_id not in allowed:
            deny[int(token_id)] = str(token)
    vocab = tokenizer.get_vocab()
    for marker in CHAT_MARKERS:
        token_id = vocab.get(marker)
        if token_id is not None and token_id not in allowed:
            deny[int(token_id)] = marker
    return deny


def check_token_ids(
    denylist: dict[int, str],
    token_ids: Sequence[Sequence[int]],
    prompt_ids: Sequence[str],
    phase: str,
) -> None:
    """Raise `ContaminationError` for the first prompt holding a denylisted token id."""
    if len(token_ids) != len(prompt_ids):
        raise ValueError("check_token_ids: one prompt id is needed per tokenized prompt")
    if not denylist:
        return
    for ids, prompt_id in zip(token_ids, prompt_ids):
        for token_id in ids:
            if token_id in denylist:
                raise ContaminationError(phase, denylist[token_id], int(token_id), prompt_id)


def role_markers(text: str) -> list[str]:
    """The chat role markers found in `text`, in order (empty when it reads as plain text)."""
    return [m.group(0) for m in _ROLE_RE.finditer(text)]
