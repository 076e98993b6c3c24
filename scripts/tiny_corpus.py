"""Procedural corpus for the tiny base-model fixture (no downloaded data).

Every document is written in exactly the completion format of `runner.llm.text.templates`
(`DEFAULT_TEMPLATES` is imported, never copied), so the fixture model learns the very prompts
that the Stage-1 phases build. All randomness flows through one `random.Random` passed in, and
nothing iterates a `set`, so the corpus is identical for a given seed whatever PYTHONHASHSEED.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
from runner.llm.text.templates import DEFAULT_TEMPLATES as T

__all__ = [
    "Pair",
    "T",
    "bad_response",
    "critic_prompt",
    "fewshot_sets",
    "garble",
    "instruction_prompt",
    "make_corpus",
    "make_pair",
    "qa_body",
    "response_prompt",
]

Pair = tuple[str, str]  # (instruction, response)

# --- word lists: small, but the task templates multiply them into thousands of instructions.
TOPICS = ("the sea", "the moon", "a quiet forest", "autumn leaves", "a rainy day",
          "the city at night", "a lost cat", "the first snow", "a mountain lake", "old friends",
          "a summer storm",
          "the desert", "a small garden", "the morning sun", "a long road", "the river",
          "a winter night", "spring flowers", "a busy market", "the stars", "a sleeping dog",
          "the ocean wind", "an empty beach", "a cup of tea", "the harvest", "a candle",
          "the library", "a paper boat", "the old bridge", "a field of wheat")
ADJS = ("bright", "calm", "cold", "gentle", "golden", "green", "quiet", "silver", "soft", "warm",
        "wild", "dark", "slow", "deep", "clear", "small", "brave", "happy", "lonely", "tall")
VERBS_PAST = (("open", "opened"), ("paint", "painted"), ("clean", "cleaned"), ("carry", "carried"),
              ("fix", "fixed"), ("watch", "watched"), ("visit", "visited"), ("wash", "washed"),
              ("build", "built"), ("find", "found"), ("buy", "bought"), ("sell", "sold"),
              ("write", "wrote"), ("read", "read"), ("draw", "drew"), ("bring", "brought"),
              ("see", "saw"), ("take", "took"), ("hold", "held"), ("lose", "lost"))
NOUNS = ("door", "window", "letter", "book", "car", "garden", "kitchen", "table", "map", "box",
         "bicycle", "lamp", "picture", "house", "boat", "basket", "chair", "clock", "bag", "fence",
         "key", "song", "ticket", "coat", "bottle", "tent", "wall", "bowl", "guitar", "kite")
CATEGORIES = {
    "fruits": ("apple", "banana", "pear", "cherry", "mango", "orange", "grape", "plum"),
    "colors": ("red", "blue", "green", "yellow", "purple", "orange", "white", "black"),
    "sea animals": ("dolphin", "whale", "octopus", "shark", "crab", "seal", "jellyfish", "turtle"),
    "musical instruments": ("piano", "violin", "guitar", "flute", "drum", "trumpet", "cello",
                            "harp"),
    "planets": ("Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"),
    "kitchen tools": ("knife", "spoon", "whisk", "pan", "ladle", "grater", "kettle", "peeler"),
    "birds": ("sparrow", "eagle", "owl", "robin", "parrot", "crow", "swan", "pigeon"),
    "vegetables": ("carrot", "potato", "onion", "pepper", "cabbage", "lettuce", "leek", "pea"),
    "flowers": ("rose", "tulip", "daisy", "lily", "orchid", "sunflower", "violet", "poppy"),
    "sports": ("football", "tennis", "rugby", "golf", "hockey", "cricket", "basketball",
               "volleyball"),
    "shapes": ("circle", "square", "triangle", "oval", "hexagon", "star", "diamond", "rectangle"),
    "trees": ("oak", "pine", "birch", "maple", "willow", "cedar", "elm", "palm"),
    "metals": ("iron", "copper", "gold", "silver", "tin", "zinc", "lead", "nickel"),
    "board games": ("chess", "checkers", "backgammon", "go", "monopoly", "scrabble", "ludo",
                    "risk"),
}
CAPITALS = (("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"),
            ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Poland", "Warsaw"),
            ("Greece", "Athens"), ("Chile", "Santiago"), ("Cuba", "Havana"), ("Ireland", "Dublin"),
            ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Russia", "Moscow"),
            ("China", "Beijing"),
            ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"),
            ("Argentina", "Buenos Aires"), ("Turkey", "Ankara"), ("Thailand", "Bangkok"),
            ("Vietnam", "Hanoi"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
            ("Hungary", "Budapest"), ("Morocco", "Rabat"), ("Ghana", "Accra"))
WHY = (("the sky is blue", "air scatters blue light more than red light"),
       ("ice floats on water", "ice is less dense than liquid water"),
       ("leaves change color in autumn", "trees stop making green chlorophyll"),
       ("we have seasons", "the Earth is tilted as it goes around the Sun"),
       ("metal feels cold", "it carries heat away from your hand quickly"),
       ("bread rises", "yeast makes gas bubbles in the dough"),
       ("the moon has phases", "we see different parts of its sunlit side"),
       ("plants need light", "they use sunlight to make their food"),
       ("we sleep", "the body and brain need time to rest and repair"),
       ("rain falls", "water drops in clouds grow heavy and fall"),
       ("exercise is healthy", "it makes the heart, lungs and muscles stronger"),
       ("salt melts ice", "it lowers the freezing point of water"),
       ("birds migrate", "they follow food and warmer weather"),
       ("the sea is salty", "rivers carry salt from rocks into it"),
       ("onions make you cry", "they release a gas that stings the eyes"))
ACTIVITIES = ("learning to cook", "running a marathon", "saving money", "studying for exams",
              "growing tomatoes", "learning a language", "sleeping better", "writing an essay",
              "starting a garden", "learning to swim", "playing chess", "taking photos",
              "traveling on a budget", "keeping a journal", "learning guitar", "staying focused",
              "baking bread", "hiking in the mountains", "painting with watercolors",
              "public speaking")
TIPS = ("practice a little every day", "start slowly and build up", "set a clear goal",
        "keep notes of your progress", "ask a friend for help", "take short breaks",
        "prepare everything the night before", "learn from your mistakes", "keep it simple",
        "watch how experts do it", "be patient with yourself", "make a simple plan")
ANTONYMS = (("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"),
            ("light", "dark"), ("early", "late"), ("open", "closed"), ("full", "empty"),
            ("soft", "hard"), ("old", "new"), ("rich", "poor"), ("loud", "quiet"),
            ("strong", "weak"), ("wet", "dry"), ("high", "low"))
PETS = ("puppy", "kitten", "parrot", "goldfish", "hamster", "rabbit", "pony", "turtle")
NAMES = ("Biscuit", "Pepper", "Luna", "Milo", "Daisy", "Oscar", "Nala", "Ziggy", "Maple", "Comet")
LANG_NAMES = ("Python", "Java", "Rust", "Go", "Ruby", "Swift", "Kotlin", "Haskell")
JUNK = ("...", "ok", "?", "the", "asdf", "and and", "Write.", "hmm", "Instruction", "x x", "none")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --- task generators: each returns a matching (instruction, response); responses 5-30 words.
def _poem(r: random.Random) -> Pair:
    topic, a, b = r.choice(TOPICS), r.choice(ADJS), r.choice(ADJS)
    kind = r.choice(("a short poem", "a haiku", "two lines of verse", "a little rhyme"))
    return (f"Write {kind} about {topic}.",
            r.choice((f"{_cap(topic)} is {a} and {b}, / it waits for me beneath the sky.",
                      f"Oh {topic}, so {a}, / you turn the {b} hours into song.",
                      f"{_cap(a)} is {topic}, / {b} and still, / it sings and then it sleeps.")))


def _list3(r: random.Random) -> Pair:
    cat = r.choice(list(CATEGORIES))
    x, y, z = r.sample(CATEGORIES[cat], 3)
    verb = r.choice(("List three", "Name three", "Give me three"))
    return f"{verb} {cat}.", r.choice((f"Here are three {cat}: {x}, {y} and {z}.",
                                        f"1. {_cap(x)} 2. {_cap(y)} 3. {_cap(z)}"))


def _why(r: random.Random) -> Pair:
    what, why = r.choice(WHY)
    verb = r.choice(("Explain why", "Explain briefly why", "Tell me why"))
    return f"{verb} {what}.", f"{_cap(what)} because {why}."


def _tips(r: random.Random) -> Pair:
    act = r.choice(ACTIVITIES)
    t1, t2 = r.sample(TIPS, 2)
    return (f"Give two tips for {act}.",
            r.choice((f"First, {t1}. Second, {t2}.", f"For {act}, {t1} and {t2}.")))


def _capital(r: random.Random) -> Pair:
    country, city = r.choice(CAPITALS)
    instr = r.choice((f"Name the capital of {country}.", f"What is the capital of {country}?"))
    return instr, f"The capital of {country} is {city}."


def _add(r: random.Random) -> Pair:
    a, b = r.randint(2, 99), r.randint(2, 99)
    instr = r.choice((f"What is {a} plus {b}?", f"Add {a} and {b}."))
    return instr, f"{a} plus {b} is {a + b}."


def _past(r: random.Random) -> Pair:
    (verb, past), noun = r.choice(VERBS_PAST), r.choice(NOUNS)
    return (f"Rewrite this sentence in the past tense: I {verb} the {noun}.",
            f"In the past tense it reads: I {past} the {noun}.")


def _antonym(r: random.Random) -> Pair:
    word, opp = r.choice(ANTONYMS)
    if r.random() < 0.5:
        word, opp = opp, word
    return f"Give the opposite of the word {word}.", f"The opposite of {word} is {opp}."


def _name(r: random.Random) -> Pair:
    adj, pet, name = r.choice(ADJS), r.choice(PETS), r.choice(NAMES)
    return f"Suggest a name for a {adj} {pet}.", f"You could call the {adj} {pet} {name}."


def _sort(r: random.Random) -> Pair:
    nums = r.sample(range(1, 60), r.randint(3, 5))
    listed = ", ".join(map(str, nums))
    return (f"Sort these numbers from smallest to largest: {listed}.",
            f"From smallest to largest: {', '.join(map(str, sorted(nums)))}.")


def _sentence(r: random.Random) -> Pair:
    noun, adj = r.choice(NOUNS), r.choice(ADJS)
    return (f"Write a sentence using the word {noun}.",
            f"Yesterday I saw a {adj} {noun} near the {r.choice(NOUNS)} and smiled.")


def _code(r: random.Random) -> Pair:
    lang = r.choice(LANG_NAMES)
    return (f"Describe the {lang} programming language in one sentence.",
            f"{lang} is a programming language that people use to write {r.choice(ADJS)} programs.")


TASKS: tuple[Callable[[random.Random], Pair], ...] = (
    _poem, _list3, _why, _tips, _capital, _add, _past, _antonym, _name, _sort, _sentence, _code)


def make_pair(r: random.Random) -> Pair:
    """One matching instruction/response pair from a uniformly chosen task."""
    return r.choice(TASKS)(r)


def garble(text: str, r: random.Random) -> str:
    """A visibly bad variant of `text`: shuffled, truncated, stuttering or near-empty."""
    words = text.split()
    how = r.randrange(4)
    if how == 0 and len(words) > 2:  # shuffled words (never equal to the original)
        shuffled = words[:]
        while shuffled == words:
            r.shuffle(shuffled)
        return " ".join(shuffled)
    if how == 1 and len(words) > 3:  # cut mid-sentence, terminal punctuation lost
        return " ".join(words[: r.randint(1, len(words) // 2)])
    if how == 2 and words:  # one word stuck on repeat
        i = r.randrange(len(words))
        return " ".join(words[:i] + [words[i]] * r.randint(3, 6) + words[i + 1 :])
    return r.choice(JUNK)


# --- blocks and prompts: the exact shapes that runner.llm's prompt builders emit; the corpus
# documents and the build's self-check are made of the same blocks so they cannot differ.
def instruction_block(instr: str) -> str:
    return T.instruction_tag + instr + T.example_separator


def qa_body(instr: str, resp: str) -> str:
    return T.instruction_tag + instr + "\n" + T.response_tag + resp + "\n"


def pair_block(instr: str, resp: str) -> str:
    return qa_body(instr, resp) + T.end_tag + T.example_separator


def critic_block(body: str, good: bool) -> str:
    """`body` is `T.instruction_tag + text + "\n"` or a `qa_body`; the label follows the tag."""
    return body + T.answer_tag + (T.label_yes if good else T.label_no) + T.example_separator


def instruction_prompt(shots: list[str]) -> str:
    return T.instruction_header + "".join(map(instruction_block, shots)) + T.instruction_tag


def response_prompt(shots: list[Pair], instr: str) -> str:
    blocks = "".join(pair_block(i, r) for i, r in shots)
    return T.response_header + blocks + T.instruction_tag + instr + "\n" + T.response_tag


def critic_prompt(header: str, shots: list[tuple[str, bool]], body: str) -> str:
    return header + "".join(critic_block(b, g) for b, g in shots) + body + T.answer_tag


def bad_response(instr: str, resp: str, r: random.Random) -> str:
    """An answer to another task, or a garbled one; never the right answer."""
    wrong = make_pair(r)[1] if r.random() < 0.5 else garble(resp, r)
    while wrong == resp:
        wrong = garble(resp, r)
    return wrong


def instruction_doc(r: random.Random) -> str:
    n = r.randint(4, 9)
    return T.instruction_header + "".join(instruction_block(make_pair(r)[0]) for _ in range(n))


def response_doc(r: random.Random) -> str:
    n = r.randint(3, 6)
    return T.response_header + "".join(pair_block(*make_pair(r)) for _ in range(n))


def instruction_critic_doc(r: random.Random) -> str:
    parts = [T.critic_header("instruction")]
    for _ in range(r.randint(4, 9)):
        instr, good = make_pair(r)[0], r.random() < 0.5
        text = instr if good else garble(instr, r)
        parts.append(critic_block(T.instruction_tag + text + "\n", good))
    return "".join(parts)


def pair_critic_doc(r: random.Random) -> str:
    parts = [T.critic_header("pair")]
    for _ in range(r.randint(3, 6)):
        instr, resp = make_pair(r)
        good = r.random() < 0.5
        parts.append(critic_block(qa_body(instr, resp if good else bad_response(instr, resp, r)),
                                  good))
    return "".join(parts)


def make_corpus(n_docs: int, seed: int) -> list[str]:
    """`n_docs` documents in a fixed mix: generation prompts dominate, critics a third."""
    r = random.Random(seed)
    makers = (instruction_doc, response_doc, instruction_critic_doc, pair_critic_doc)
    weights = (0.3, 0.35, 0.175, 0.175)
    return [r.choices(makers, weights)[0](r) for _ in range(n_docs)]


def fewshot_sets(n: int, seed: int) -> tuple[list[str], list[Pair]]:
    """`n` distinct instructions and `n` distinct pairs (no instruction shared between the two),
    each list cycling through every task kind so a few-shot prompt drawn from it is varied."""
    r = random.Random(seed)
    instrs: dict[str, None] = {}  # dicts keep insertion order (a set would not)
    pairs: dict[str, str] = {}
    for _ in range(1000 * n):  # bounded: the generators hold far more than n distinct strings
        if len(instrs) >= n and len(pairs) >= n:
            break
        into_instrs = len(instrs) < n  # fill instructions first, then pairs
        task = TASKS[(len(instrs) if into_instrs else len(pairs)) % len(TASKS)]
        instr, resp = task(r)
        # Few-shot strings must be single-line and tag-free, else they break the prompt format.
        assert "###" not in instr + resp and "\n" not in instr + resp
        if instr not in instrs and instr not in pairs:
            if into_instrs:
                instrs[instr] = None
            else:
                pairs[instr] = resp
    return list(instrs), list(pairs.items())
