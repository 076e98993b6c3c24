"""Cut generations, classify them, parse and deduplicate instructions.

These definitions ARE the QC metric definitions (`qc.py` only counts them).

**Cut.** `raw` is the decoded continuation (EOS and padding never included). The cut is at
the earliest occurrence in `raw` of any of the templates' `stop_strings` (`\\n\\n###`,
`### End`, `\\n###`); the *kept text* is `raw` before it, stripped of surrounding whitespace.
With no stop string in `raw`, the kept text is all of `raw`, stripped.

**Classes.** Each output gets exactly one class, tested in this order:

1. `runaway` - the model ran on into another example: the kept text contains a template tag
   (`### Instruction:`, `### Response:`, `### Answer:`, `### End`, i.e. any tag stripped of
   whitespace), or - for an *instruction* - it contains a blank line (`\\n` + optional spaces
   + `\\n`), which in the instruction format starts a second example. Also a runaway, in
   the template's own format or any other common dialogue or prompt format (*format drift*):
   - a *marker line* after the first line: a line that starts (after spaces) with the
     templates' `decorations` (markdown headings `#`..`######`, blockquote `>`, list markers
     `-`/`*`/`+`, numbering `1.`/`1)`, bold/italic `**`/`__`, an opening `[`; any combination),
     then one of the templates' `role_words` (Instruction, Question, Response, Answer, Input,
     Output, User, Assistant, Human, System, Q, A, ...; any case, a whole word) or a bare
     tag name of the templates (`Instruction` of `### Instruction:`), then an
     optional closing `**`/`__`/`]`, then a colon: `## Question:`, `**User:**`,
     `- A:`, `[Input]:`, `Human:`. The first line is exempt, so an answer that opens with
     `Answer: 42` is clean; a marker line *after* it starts a new example;
   - a chat-template or special-token string anywhere in the kept text: the templates'
     `chat_markers` (`<|im_start|>`, `[INST]`, `<|eot_id|>`, `</s>`, ...) and the model's own
     special tokens (passed in by the generation phases);
   - for a *response*: a paragraph after a blank line whose last line ends in `?` (the
     model asks a new question: a new example or turn);
   - for an *instruction*: a line after the first that opens (after decoration) with one of
     the templates' `answer_openers` (`The answer is`, ...): the task answered itself.
2. `token_limit` - generation stopped at `max_new_tokens` (`stopped_by == "max_new_tokens"`)
   and `raw` holds no stop string: the output never ended. (A runaway that also hit the limit
   counts as runaway: running on is why it got that long.)
3. `leakage` - a delimiter fragment is left in the kept text: it contains a fragment (the
   leading run of non-alphanumeric, non-space characters of each tag, `###`, when at least
   two long; and each stop string stripped of whitespace), or its last whitespace-separated
   word is a proper, non-alphanumeric prefix of one (`#`, `##`; `C#` is a word, not a cut).
4. `clean` - none of the above.

**Parsing.** An instruction is the kept text with each line's trailing spaces removed, or
None when that is empty; for a runaway, its first paragraph (before a blank line or tag), kept
for review only. A response is the kept text. A record is *kept* (`keep: true`) when it is
`clean` and its parsed text is not empty.

**Deduplication** (`select_instructions`). Over the kept instruction records, in record
order, the first of each group of equal instructions is taken: equal exactly, or equal after
`normalise` (Unicode NFKC, case-fold, every punctuation character removed, whitespace runs
collapsed to one space, stripped). At most `limit` are taken.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from runner.llm.text.templates import Templates

__all__ = [
    "CLASSES",
    "Cleaned",
    "OutputClass",
    "classify",
    "cut",
    "delimiter_fragments",
    "drift_marker",
    "marker_line_re",
    "normalise",
    "parse_instruction",
    "select_instructions",
]

OutputClass = Literal["clean", "runaway", "token_limit", "leakage"]
CLASSES: tuple[OutputClass, ...] = ("clean", "runaway", "token_limit", "leakage")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True)
class Cleaned:
    """One classified output: its kept text, class, and the stop string it was cut at."""

    text: str
    cls: OutputClass
    stop: str | None


def cut(raw: str, t: Templates) -> tuple[str, str | None]:
    """`raw` before the earliest stop string (stripped), and that stop string (or None)."""
    best: tuple[int, str] | None = None
    for stop in t.stop_strings:
        at = raw.find(stop) if stop else -1
        if at >= 0 and (best is None or at < best[0]):
            best = (at, stop)
    if best is None:
        return raw.strip(), None
    return raw[: best[0]].strip(), best[1]


def _tags(t: Templates) -> list[str]:
    return [x.strip() for x in (t.instruction_tag, t.response_tag, t.answer_tag, t.end_tag)]


def _bare_tag_names(t: Templates) -> list[str]:
    """The templates' own tags without decoration and colon: `Instruction`, `Response`, ..."""
    names = []
    for tag in (t.instruction_tag, t.response_tag, t.answer_tag):
        bare = tag.strip().lstrip("#").strip()
        if bare.endswith(":") and len(bare) > 1:
            names.append(bare[:-1].strip())
    return names


def delimiter_fragments(t: Templates) -> list[str]:
    """The delimiter fragments whose presence in kept text is leakage (e.g. `###`)."""
    return list(_fragments(t))


# What `classify` derives from the templates is derived once per Templates (frozen, hashable):
# every generated record is classified, thousands a phase.
@functools.lru_cache(maxsize=32)
def _fragments(t: Templates) -> tuple[str, ...]:
    frags: set[str] = set()
    for tag in _tags(t):
        m = re.match(r"[^\w\s]+", tag)
        if m and len(m.group(0)) >= 2:
            frags.add(m.group(0))
    frags.update(s.strip() for s in t.stop_strings if s.strip())
    return tuple(sorted(frags, key=lambda f: (len(f), f)))


@functools.lru_cache(maxsize=32)
def marker_line_re(t: Templates) -> re.Pattern[str] | None:
    """A line that opens a new example in a common format: decoration, role word, colon."""
    given = [*t.role_words, *_bare_tag_names(t)]
    words = sorted({w.strip() for w in given if w.strip()}, key=len, reverse=True)
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(
        rf"^[ \t]*(?:{t.decorations})[ \t]*(?:{alternatives})\b[ \t]*(?:\*{{1,2}}|_{{1,2}}|\])?[ \t]*:",
        re.IGNORECASE,
    )


def drift_marker(text: str, t: Templates, special_tokens: Iterable[str] = ()) -> str | None:
    """The first sign of format drift in kept text (see the module docstring), or None."""
    for marker in (*t.chat_markers, *special_tokens):
        if marker and marker in text:
            return marker
    pattern = marker_line_re(t)
    if pattern is None:
        return None
    for line in text.splitlines()[1:]:
        if pattern.match(line):
            return line.strip()
    return None


def _is_runaway(text: str, t: Templates, kind: str, special_tokens: Iterable[str] = ()) -> bool:
    if any(tag and tag in text for tag in _tags(t)):
        return True
    if drift_marker(text, t, special_tokens) is not None:
        return True
    if kind == "instruction":
        return bool(_BLANK_LINE.search(text)) or _answers_itself(text, t)
    return _asks_a_new_question(text)


def _asks_a_new_question(text: str) -> bool:
    """A paragraph after the first whose last line is a question."""
    for para in _BLANK_LINE.split(text)[1:]:
        lines = [line.strip() for line in para.strip().splitlines() if line.strip()]
        if lines and lines[-1].endswith("?"):
            return True
    return False


def _answers_itself(text: str, t: Templates) -> bool:
    """An instruction line after the first that opens like an answer (`The answer is`)."""
    pattern = _answer_opener_re(t)
    return pattern is not None and any(pattern.match(line) for line in text.splitlines()[1:])


@functools.lru_cache(maxsize=32)
def _answer_opener_re(t: Templates) -> re.Pattern[str] | None:
    openers = [re.escape(o.strip()) for o in t.answer_openers if o.strip()]
    if not openers:
        return None
    return re.compile(rf"^[ \t]*(?:{t.decorations})[ \t]*(?:{'|'.join(openers)})\b", re.IGNORECASE)


def _has_leakage(text: str, t: Templates) -> bool:
    frags = _fragments(t)
    if any(f in text for f in frags):
        return True
    # A truncated delimiter as the last word ("... done. ##"); "C#" is a word, not a cut.
    words = text.split()
    last = words[-1] if words else ""
    return any(
        last == f[:n] and not any(ch.isalnum() for ch in last)
        for f in frags
        for n in range(1, len(f))
    )


def classify(
    raw: str, stopped_by: str, t: Templates, kind: str, special_tokens: Iterable[str] = ()
) -> Cleaned:
    """Cut `raw` and give it exactly one class; `kind` is `instruction` or `response`;
    `special_tokens`: the model's own special-token strings (their presence is a runaway)."""
    text, stop = cut(raw, t)
    if _is_runaway(text, t, kind, special_tokens):
        return Cleaned(text, "runaway", stop)
    if stopped_by == "max_new_tokens" and stop is None:
        return Cleaned(text, "token_limit", stop)
    if _has_leakage(text, t):
        return Cleaned(text, "leakage", stop)
    return Cleaned(text, "clean", stop)


def parse_instruction(cleaned: Cleaned, t: Templates) -> str | None:
    """The instruction in a classified output (first paragraph of a runaway), or None."""
    text = cleaned.text
    if cleaned.cls == "runaway":
        text = _BLANK_LINE.split(text, maxsplit=1)[0]
        for tag in _tags(t):
            if tag:
                text = text.split(tag, 1)[0]
    lines = [line.rstrip() for line in text.strip().splitlines()]
    parsed = "\n".join(lines).strip()
    return parsed or None


def normalise(text: str) -> str:
    """NFKC, case-folded, punctuation removed, whitespace collapsed: the dedup key."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    return " ".join(text.split())


def select_instructions(
    records: Iterable[dict[str, Any]], limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Kept instruction records, exact and normalised duplicates removed, at most `limit`.

    Returns (selected, duplicates dropped). Records without `keep: true` or an `instruction`
    are skipped and not counted as duplicates.
    """
    seen_exact: set[str] = set()
    seen_norm: set[str] = set()
    selected: list[dict[str, Any]] = []
    dups = 0
    for rec in records:
        ins = rec.get("instruction")
        if not rec.get("keep") or not ins:
            continue
        key = normalise(ins)
        if ins in seen_exact or key in seen_norm:
            dups += 1
            continue
        seen_exact.add(ins)
        seen_norm.add(key)
        if limit is None or len(selected) < limit:
            selected.append(rec)
    return selected, dups
