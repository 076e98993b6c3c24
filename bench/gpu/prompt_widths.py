"""How much of `generate_responses`' prefill is padding: the prompts' token counts against the
refill runner's width (the longest prompt, rounded up to `refill.PAD_TO`).

Builds the prompts the phase builds with `fewshot_draw: row` (3 pairs from the fixture pool
per row, `response_prompt`), from the instructions of a run's `generate_instructions` records,
and counts their tokens with the tokenizer the GPU bench models use (the fixture's).

Run: python bench/gpu/prompt_widths.py STATE/RUN/phases/generate_instructions.i1/records.jsonl
(any such run; `bench_instructions.py --tiny` makes one under /tmp/runner-instr-bench/state/r1).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from runner.llm.decoding.refill import PAD_TO  # noqa: E402
from runner.llm.text.prompts import DEFAULT_TEMPLATES, pick_shots, read_fewshot, response_prompt  # noqa: E402


def main() -> None:
    from transformers import AutoTokenizer

    records = [json.loads(x) for x in Path(sys.argv[1]).read_text().splitlines()]
    texts = [r.get("instruction") or r.get("text") for r in records]
    texts = [t for t in texts if t]
    tok = AutoTokenizer.from_pretrained(ROOT / "fixtures" / "tiny-base")
    pool = read_fewshot(ROOT / "fixtures" / "fewshot" / "pairs.jsonl", ("instruction", "response"))
    lengths = []
    for n, text in enumerate(texts):
        shots = pick_shots(pool, 3, 1234 + n // 256, n % 256)
        prompt = response_prompt([(e["instruction"], e["response"]) for e in shots], text,
                                 DEFAULT_TEMPLATES)
        lengths.append(len(tok(prompt)["input_ids"]))
    width = -(-max(lengths) // PAD_TO) * PAD_TO
    print(f"{len(lengths)} prompts: min {min(lengths)}, median {statistics.median(lengths)}, "
          f"mean {statistics.mean(lengths):.1f}, max {max(lengths)} tokens; runner width {width}; "
          f"prompt tokens / prefilled tokens {sum(lengths) / (width * len(lengths)):.3f}")


if __name__ == "__main__":
    main()
