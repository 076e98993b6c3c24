"""Build the evaluation set of verifiable instructions (`fixtures/eval/`), deterministically.

    python scripts/build_eval_set.py            # writes fixtures/eval/verifiable.jsonl
    python scripts/build_eval_set.py --out DIR  # elsewhere (the tests regenerate into tmp)

Everything comes from the word lists and templates below and one `random.Random(SEED)`; no
`set` is iterated and no data is downloaded, so two runs write identical bytes. Each item is
`{"id", "instruction", "checker", "args"}`; `checker` names a function of
`runner.llm.evaluation.verifiable` and `args` its parameters. The items are spread evenly over the
checkers and listed round-robin (checker 1, 2, ..., 12, 1, 2, ...), so any prefix (the
phase's `limit:`) is balanced too.

Also written: `fewshot.jsonl`, one hand-written instruction/response pair per checker whose
response passes its checker, for the base model's few-shot prompt (topics not in the set).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from runner.llm.evaluation.verifiable import CHECKERS, check, validate_args

__all__ = ["FEWSHOT", "MAKERS", "PER_CHECKER", "SEED", "build_items", "main", "render"]

SEED = 20240601
PER_CHECKER = 22  # x 12 checkers = 264 items

# Topics paired with a word that writing about them naturally uses: the keyword to avoid.
TOPICS = (
    ("rivers", "water"), ("the moon", "night"), ("a quiet forest", "trees"),
    ("autumn", "leaves"), ("a rainy afternoon", "rain"), ("the city at night", "lights"),
    ("a lost cat", "home"), ("the first snow", "cold"), ("a mountain lake", "mountains"),
    ("old friends", "together"), ("a summer storm", "thunder"), ("the desert", "sand"),
    ("a small garden", "flowers"), ("the morning sun", "light"), ("a long train journey", "train"),
    ("the ocean", "waves"), ("a winter evening", "fire"), ("a busy market", "people"),
    ("the stars", "sky"), ("a sleeping dog", "dog"), ("a cup of tea", "tea"),
    ("the harvest", "farmers"), ("a candle", "flame"), ("the library", "books"),
    ("a paper boat", "paper"), ("an old bridge", "river"), ("a field of wheat", "golden"),
    ("bees", "honey"), ("a lighthouse", "ships"), ("a bakery", "bread"),
    ("learning to swim", "pool"), ("riding a bicycle", "wheels"), ("a thunderstorm", "lightning"),
    ("a museum", "art"), ("the seaside", "beach"), ("a school day", "teacher"),
)
# Words to include: concrete, easy to fit into any short text.
KEYWORDS = ("lantern", "blue", "window", "music", "journey", "silver", "garden", "morning",
            "quiet", "bridge", "story", "green", "coffee", "letter", "mirror", "kitchen")
# Tasks: "{topic}" is filled in; each reads as a complete request before the constraint.
TASKS = (
    "Write a short paragraph about {topic}.", "Describe {topic}.",
    "Write a few sentences about {topic}.", "Tell a very short story about {topic}.",
    "Explain what you like about {topic}.", "Write a note to a friend about {topic}.",
    "Give a short description of {topic}.", "Write a diary entry about {topic}.",
)
OPENERS = ("Once upon a time", "In my opinion", "Dear friend", "Here is my answer:",
           "Today I learned", "Let me explain.", "Picture this:", "To begin with")
CLOSERS = ("Is there anything else?", "That is all.", "The end.", "Thank you for reading.",
           "P.S. See you soon.", "Any other questions?", "Have a nice day!")
LIST_TASKS = ("things you might see near {topic}", "facts about {topic}",
              "reasons to enjoy {topic}", "words that describe {topic}",
              "tips for enjoying {topic}", "questions about {topic}")
JSON_TASKS = (
    'Describe {topic} as a JSON object with the keys "name" and "description".',
    'Give a JSON object with the keys "topic" and "mood" for a poem about {topic}.',
    'Answer in valid JSON only: an object with the keys "title" and "summary" of a story '
    'about {topic}.',
    'Return a JSON object with the keys "subject", "color" and "feeling" for {topic}.',
)
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

Made = tuple[str, dict[str, object]]  # (instruction, checker args)


def _lines_word(n: int) -> str:
    return f"{NUMBER_WORDS[n]} line" + ("" if n == 1 else "s")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# One maker per checker: (rng, task text, topic, the topic's word) -> (instruction, args).
# Each draws its numbers and phrasing from `r` only, so the whole set follows from the seed.
def _max_words(r: random.Random, task: str, topic: str, word: str) -> Made:
    n = r.choice((10, 15, 20, 25, 30))
    return r.choice((f"{task} Use at most {n} words.", f"{task} Keep it to {n} words or fewer.",
                     f"In no more than {n} words: {_lower_first(task)}")), {"n": n}


def _min_words(r: random.Random, task: str, topic: str, word: str) -> Made:
    n = r.choice((30, 40, 50, 60))
    return r.choice((f"{task} Use at least {n} words.",
                     f"{task} Write no fewer than {n} words.")), {"n": n}


def _all_caps(r: random.Random, task: str, topic: str, word: str) -> Made:
    return r.choice((f"{task} Write your whole answer in ALL CAPITAL LETTERS.",
                     f"{task} Use only capital letters.",
                     f"Write one sentence about {topic} in ALL CAPITAL LETTERS.")), {}


def _all_lowercase(r: random.Random, task: str, topic: str, word: str) -> Made:
    return r.choice((f"{task} Use only lowercase letters, no capitals at all.",
                     f"{task} Write everything in lowercase.",
                     f"Write one sentence about {topic} in all lowercase letters.")), {}


def _contains_keyword(r: random.Random, task: str, topic: str, word: str) -> Made:
    k = r.choice(KEYWORDS)
    return r.choice((f'{task} Include the word "{k}".',
                     f'{task} Make sure to use the word "{k}".',
                     f'{task} Mention the word "{k}" at least once.')), {"keyword": k}


def _avoids_keyword(r: random.Random, task: str, topic: str, word: str) -> Made:
    # The word the topic invites: avoiding it is the hard, meaningful case.
    return r.choice((f'{task} Do not use the word "{word}".',
                     f'{task} Avoid the word "{word}" completely.',
                     f'{task} Never write the word "{word}".')), {"keyword": word}


def _exact_lines(r: random.Random, task: str, topic: str, word: str) -> Made:
    n = r.choice((2, 3, 4))
    return r.choice((f"{task} Answer in exactly {_lines_word(n)}.",
                     f"Write exactly {_lines_word(n)} about {topic}.",
                     f"{task} Your answer must have exactly {n} lines.")), {"n": n}


def _ends_with(r: random.Random, task: str, topic: str, word: str) -> Made:
    p = r.choice(CLOSERS)
    return r.choice((f'{task} End your answer with the exact phrase "{p}"',
                     f'{task} Finish with the words "{p}"')), {"phrase": p}


def _starts_with(r: random.Random, task: str, topic: str, word: str) -> Made:
    p = r.choice(OPENERS)
    return r.choice((f'{task} Start your answer with "{p}"',
                     f'{task} Begin with the exact words "{p}"')), {"phrase": p}


def _json_object(r: random.Random, task: str, topic: str, word: str) -> Made:
    return r.choice(JSON_TASKS).format(topic=topic), {}


def _numbered_list(r: random.Random, task: str, topic: str, word: str) -> Made:
    n, what = r.choice((2, 3, 4, 5)), r.choice(LIST_TASKS).format(topic=topic)
    return r.choice((f"List exactly {n} {what} as a numbered list.",
                     f"Give a numbered list of {n} {what}, one per line.")), {"n": n}


def _no_commas(r: random.Random, task: str, topic: str, word: str) -> Made:
    return r.choice((f"{task} Do not use any commas.",
                     f"{task} Write it without a single comma.")), {}


MAKERS: dict[str, Callable[[random.Random, str, str, str], Made]] = {
    "max_words": _max_words, "min_words": _min_words, "all_caps": _all_caps,
    "all_lowercase": _all_lowercase, "contains_keyword": _contains_keyword,
    "avoids_keyword": _avoids_keyword, "exact_lines": _exact_lines, "ends_with": _ends_with,
    "starts_with": _starts_with, "json_object": _json_object, "numbered_list": _numbered_list,
    "no_commas": _no_commas,
}

# Few-shot pairs for the base model: one per checker, each response passing its checker.
FEWSHOT = (
    ("Describe a red kite in the wind. Use at most 12 words.",
     "A red kite dances high, tugging at its string in the wind.", "max_words", {"n": 12}),
    ("Write a few sentences about a village well. Use at least 25 words.",
     "The village well stands in the middle of the square. Every morning people come with "
     "buckets, share the news of the day and carry cool water back to their homes.",
     "min_words", {"n": 25}),
    ("Write one sentence about a clock tower in ALL CAPITAL LETTERS.",
     "THE OLD CLOCK TOWER RINGS EVERY HOUR OVER THE SLEEPY TOWN.", "all_caps", {}),
    ("Describe a pond in spring. Write everything in lowercase.",
     "the pond is full of frogs and the reeds are bright green again.", "all_lowercase", {}),
    ('Write a sentence about a bus stop. Include the word "umbrella".',
     "At the bus stop an old man shared his umbrella with a stranger.", "contains_keyword",
     {"keyword": "umbrella"}),
    ('Describe a chess game. Do not use the word "king".',
     "Two players sat in silence while the pieces moved slowly across the board.",
     "avoids_keyword", {"keyword": "king"}),
    ("Write exactly two lines about a windmill.",
     "The windmill turns above the fields.\nIts sails creak softly in the breeze.",
     "exact_lines", {"n": 2}),
    ('Describe a picnic. End your answer with the exact phrase "See you there."',
     "We spread a blanket under the oak and shared sandwiches and lemonade. See you there.",
     "ends_with", {"phrase": "See you there."}),
    ('Describe a snowman. Start your answer with "Look at"',
     "Look at the snowman by the gate, with a carrot nose and a striped scarf.", "starts_with",
     {"phrase": "Look at"}),
    ('Describe a violin as a JSON object with the keys "name" and "sound".',
     '{"name": "violin", "sound": "warm and singing"}', "json_object", {}),
    ("List exactly 3 things you might pack for a hike as a numbered list.",
     "1. A bottle of water\n2. A warm jacket\n3. A map of the trail", "numbered_list", {"n": 3}),
    ("Write a sentence about a fox. Do not use any commas.",
     "The fox crept through the tall grass and vanished into the hedge.", "no_commas", {}),
)


def build_items(seed: int = SEED, per_checker: int = PER_CHECKER) -> list[dict[str, object]]:
    """The evaluation items: `per_checker` per checker, listed round-robin, ids in order."""
    rng = random.Random(seed)
    seen = {instr for instr, _, _, _ in FEWSHOT}  # keep the few-shot pairs out of the set
    by_checker: list[list[tuple[str, str, dict[str, object]]]] = []
    for name in CHECKERS:  # dict order: fixed by the source, not by hashing
        made: list[tuple[str, str, dict[str, object]]] = []
        while len(made) < per_checker:
            topic, word = rng.choice(TOPICS)
            task = rng.choice(TASKS).format(topic=topic)
            instruction, args = MAKERS[name](rng, task, topic, word)
            if instruction in seen:  # a repeat teaches nothing; draw again
                continue
            validate_args(name, args)
            seen.add(instruction)
            made.append((instruction, name, args))
        by_checker.append(made)
    items: list[dict[str, object]] = []
    for row in range(per_checker):
        for made in by_checker:
            instruction, name, args = made[row]
            items.append({"id": f"ev{len(items):04d}", "instruction": instruction,
                          "checker": name, "args": args})
    return items


def render(rows: list[dict[str, object]]) -> bytes:
    """JSON lines, keys in insertion order, UTF-8, `\\n` endings: the same bytes everywhere."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _fewshot_rows() -> list[dict[str, object]]:
    rows = []
    for instruction, response, name, args in FEWSHOT:
        if not check(name, response, args):  # a bad example would teach the wrong thing
            raise SystemExit(f"few-shot response fails its own checker {name}: {response!r}")
        rows.append({"instruction": instruction, "response": response, "checker": name,
                     "args": args})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write `verifiable.jsonl` and `fewshot.jsonl` into `--out` (default fixtures/eval)."""
    default = Path(__file__).resolve().parent.parent / "fixtures" / "eval"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=default, help="output folder")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    items = build_items()
    (args.out / "verifiable.jsonl").write_bytes(render(items))
    (args.out / "fewshot.jsonl").write_bytes(render(_fewshot_rows()))
    print(f"wrote {len(items)} items over {len(CHECKERS)} checkers to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
