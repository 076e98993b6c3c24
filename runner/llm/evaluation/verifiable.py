"""Programmatic checkers of verifiable instructions (the `evaluate` phase's ground truth).

Each checker is a pure function `(output: str, **args) -> bool`: no model, no randomness, no
I/O, so a pass/fail verdict can be recomputed by anyone from the saved output. The output given
is the model's *kept text* (its continuation cut at the first stop string and stripped, as
`cleaning.cut` defines it). Definitions, precisely:

- **A word** is a maximal run of non-whitespace characters that holds at least one letter or
  digit (so `--` or `:` alone is no word, `don't` and `x2` are one word each).
- **Every checker fails on an output with no word** (`json_object` asks for a key instead):
  an empty answer follows no instruction, and without this rule "avoid the keyword" or "no
  commas" would reward silence.
- `max_words(n)`: at most `n` words.  `min_words(n)`: at least `n` words.
- `all_caps()`: at least one cased letter, and no lowercase letter (`str.islower` per char).
- `all_lowercase()`: at least one cased letter, and no uppercase or titlecase letter.
- `contains_keyword(keyword)`: `keyword` occurs as a whole word (not inside a longer run of
  letters, digits or `_`), case-insensitively.  `avoids_keyword(keyword)`: it does not.
- `exact_lines(n)`: exactly `n` non-blank lines (blank lines are not counted).
- `starts_with(phrase)`: the output, leading whitespace removed, begins with `phrase`
  exactly (case and punctuation included).  `ends_with(phrase)`: the output, trailing
  whitespace removed, ends with `phrase` exactly.
- `json_object()`: the output (stripped; one surrounding Markdown code fence, ```` ``` ```` or
  ```` ```json ````, removed) parses with `json.loads` as a JSON object (a dict) with at
  least one key (`{}` says nothing, as an empty answer says nothing).
- `numbered_list(n)`: the lines that are list items (`1. text` or `1) text`: optional leading
  spaces, digits, `.` or `)`, a space, then text) number exactly `1, 2, ..., n` in order;
  other lines (an intro, a closing remark) are allowed.
- `no_commas()`: no comma, ASCII `,` or full-width `，`.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from typing import Any

__all__ = [
    "CHECKERS",
    "all_caps",
    "all_lowercase",
    "avoids_keyword",
    "check",
    "contains_keyword",
    "ends_with",
    "exact_lines",
    "json_object",
    "max_words",
    "min_words",
    "no_commas",
    "numbered_list",
    "starts_with",
    "validate_args",
    "words",
]

_ITEM = re.compile(r"^[ \t]*(\d+)[.)] +\S")
_FENCE = re.compile(r"^```[A-Za-z]*[ \t]*\n(.*)\n```$", re.DOTALL)


def words(output: str) -> list[str]:
    """The words of `output`: whitespace-separated runs holding a letter or a digit."""
    return [w for w in output.split() if any(ch.isalnum() for ch in w)]


def _has_words(output: str) -> bool:
    return bool(words(output))


def _keyword_re(keyword: str) -> re.Pattern[str]:
    # Whole word: no word character right before or after, so "art" is not found in "party".
    return re.compile(rf"(?<!\w){re.escape(keyword)}(?!\w)", re.IGNORECASE)


def max_words(output: str, n: int) -> bool:
    """At least one and at most `n` words."""
    count = len(words(output))
    return 0 < count <= n


def min_words(output: str, n: int) -> bool:
    """At least `n` words (and at least one)."""
    count = len(words(output))
    return count > 0 and count >= n


def all_caps(output: str) -> bool:
    """Has a cased letter and no lowercase letter."""
    return (_has_words(output) and any(ch.isupper() for ch in output)
            and not any(ch.islower() for ch in output))


def all_lowercase(output: str) -> bool:
    """Has a cased letter and no uppercase or titlecase letter."""
    return (_has_words(output) and any(ch.islower() for ch in output)
            and not any(ch.isupper() or ch.istitle() for ch in output))


def contains_keyword(output: str, keyword: str) -> bool:
    """`keyword` occurs as a whole word, ignoring case."""
    return _has_words(output) and _keyword_re(keyword).search(output) is not None


def avoids_keyword(output: str, keyword: str) -> bool:
    """`keyword` does not occur as a whole word, ignoring case (and the output has a word)."""
    return _has_words(output) and _keyword_re(keyword).search(output) is None


def exact_lines(output: str, n: int) -> bool:
    """Exactly `n` non-blank lines."""
    return _has_words(output) and sum(1 for ln in output.splitlines() if ln.strip()) == n


def starts_with(output: str, phrase: str) -> bool:
    """Begins with `phrase` exactly, once leading whitespace is removed."""
    return _has_words(output) and output.lstrip().startswith(phrase)


def ends_with(output: str, phrase: str) -> bool:
    """Ends with `phrase` exactly, once trailing whitespace is removed."""
    return _has_words(output) and output.rstrip().endswith(phrase)


def json_object(output: str) -> bool:
    """Parses as a non-empty JSON object (one surrounding Markdown code fence allowed)."""
    text = output.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON; or nested deeper than the parser goes
        return False
    return isinstance(value, dict) and len(value) > 0


def numbered_list(output: str, n: int) -> bool:
    """Its list-item lines are numbered exactly 1..n, in order."""
    numbers = [int(m.group(1)) for ln in output.splitlines() if (m := _ITEM.match(ln))]
    return numbers == list(range(1, n + 1)) and n > 0


def no_commas(output: str) -> bool:
    """Has a word and no comma (ASCII or full-width)."""
    return _has_words(output) and "," not in output and "\uff0c" not in output


CHECKERS: dict[str, Callable[..., bool]] = {
    "max_words": max_words,
    "min_words": min_words,
    "all_caps": all_caps,
    "all_lowercase": all_lowercase,
    "contains_keyword": contains_keyword,
    "avoids_keyword": avoids_keyword,
    "exact_lines": exact_lines,
    "ends_with": ends_with,
    "starts_with": starts_with,
    "json_object": json_object,
    "numbered_list": numbered_list,
    "no_commas": no_commas,
}

# The type each parameter must have; an item whose args do not fit is refused at load time,
# so a typo in the eval set fails the phase before any model work instead of scoring 0.
_ARG_TYPES: dict[str, type] = {"n": int, "keyword": str, "phrase": str}


def validate_args(name: str, args: dict[str, Any]) -> None:
    """Raise ValueError unless `name` is a checker and `args` are exactly its parameters."""
    fn = CHECKERS.get(name)
    if fn is None:
        raise ValueError(f"unknown checker {name!r} (known: {', '.join(sorted(CHECKERS))})")
    wanted = [p for p in inspect.signature(fn).parameters if p != "output"]
    if sorted(args) != sorted(wanted):
        raise ValueError(f"checker {name!r} takes args {wanted}, got {sorted(args)}")
    for key, value in args.items():
        kind = _ARG_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(f"checker {name!r}: arg {key!r} must be {kind.__name__}, "
                             f"got {value!r}")
        if isinstance(value, int) and value < 1:
            raise ValueError(f"checker {name!r}: arg {key!r} must be >= 1, got {value!r}")
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"checker {name!r}: arg {key!r} must not be blank")


def check(name: str, output: str, args: dict[str, Any]) -> bool:
    """The verdict of checker `name` with `args` on `output` (args validated first)."""
    validate_args(name, args)
    return bool(CHECKERS[name](output, **args))
