"""Build `fixtures/tiny-chat/` from `fixtures/tiny-base/`: the same model made "chat-like".

    python scripts/build_tiny_chat.py [--out fixtures]

It exists to test that the runner's loader strips chat templates and detects chat-format
contamination, so it carries every marker of a chat model: `<|im_start|>` / `<|im_end|>` added
as special tokens, the embeddings resized to match, a ChatML `chat_template` in
tokenizer_config.json, and `<|im_end|>` among the generation EOS ids. A short deterministic
fine-tune on ChatML conversations (mixed with base documents) makes the new tokens real: the
model does emit `<|im_end|>` after a chat answer, instead of never predicting untrained rows.
Saved in bfloat16 so it stays small next to tiny-base (well under 8 MB). Run after
build_tiny_base.py; about 30 seconds on 2 CPU cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "2")  # before tokenizers/torch start their pools
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see build_tiny_base.py

import argparse
import random
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_tiny_base as base
import tiny_corpus as tc

__all__ = ["CHAT_TEMPLATE", "CHAT_TOKENS", "chat_text", "main"]

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]
# ChatML, as Qwen-style chat models ship it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SYSTEM = "You are a helpful assistant."
SEED = 4321
STEPS = 80
LR = 1e-3


def chat_text(r: random.Random) -> str:
    """One ChatML conversation of 1-3 turns built from the corpus's task generators."""
    parts = [f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"] if r.random() < 0.5 else []
    for _ in range(r.randint(1, 3)):
        instr, resp = tc.make_pair(r)
        parts.append(f"<|im_start|>user\n{instr}<|im_end|>\n"
                     f"<|im_start|>assistant\n{resp}<|im_end|>\n")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures"), help="parent folder")
    ap.add_argument("--base", type=Path, default=None, help="default: OUT/tiny-base")
    args = ap.parse_args(argv)
    hf_logging.disable_progress_bar()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    t0 = time.time()
    src, dest = args.base or args.out / "tiny-base", args.out / "tiny-chat"

    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    n_old = len(tok)
    tok.add_special_tokens({"additional_special_tokens": CHAT_TOKENS})
    tok.chat_template = CHAT_TEMPLATE
    # New rows = mean of the old ones, set by hand: resize's default "mean_resizing" samples
    # them at random, which would cost determinism for nothing.
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[n_old:] = emb[:n_old].mean(dim=0)
    assert model.get_output_embeddings().weight is emb, "embeddings must stay tied"

    # Half chat conversations, half base documents: the model learns the new tokens without
    # forgetting the completion format (contamination tests want both behaviours).
    r = random.Random(SEED)
    texts = [chat_text(r) if i % 2 == 0 else d
             for i, d in enumerate(tc.make_corpus(3_000, SEED))]
    data = base.pack(tok, texts)
    loss = base.train(model, data, STEPS, lr=LR, warmup=10, seed=SEED, log=False)  # gentle

    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=[tok.eos_token_id, im_end],
        pad_token_id=tok.pad_token_id)
    model.to(torch.bfloat16).save_pretrained(dest)
    base.save_tokenizer(tok, dest)

    # Self-check: the template is stored, the tokens are single ids, and a chat prompt is
    # answered and closed with <|im_end|> (decoded with special tokens kept, as a detector must).
    back = AutoTokenizer.from_pretrained(dest)
    assert back.chat_template and all(len(back.encode(t, add_special_tokens=False)) == 1
                                      for t in CHAT_TOKENS)
    chat = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32).eval()
    prompt = back.apply_chat_template([{"role": "user", "content": "Name the capital of Peru."}],
                                      tokenize=False, add_generation_prompt=True)
    enc = back(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = chat.generate(**enc, max_new_tokens=24, do_sample=False)
    reply = back.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
    print(f"tiny-chat: vocab {n_old} -> {len(back)}, fine-tune loss {loss:.3f}, "
          f"reply {reply!r} ({time.time() - t0:.0f}s)")
    (dest / "README.md").write_text(README.format(loss=loss, reply=reply))
    return 0 if "<|im_end|>" in reply else 1


README = """# tiny-chat

`tiny-base` made to look like a chat model, for tests of the runner's loader (strip chat
templates, detect chat-format contamination). Not for generation quality.

- tokenizer: tiny-base's plus special tokens `<|im_start|>` and `<|im_end|>`, and a ChatML
  `chat_template` in `tokenizer_config.json`;
- model: tiny-base with the embeddings resized (new rows = mean row), then fine-tuned for a few
  steps on ChatML conversations mixed with base documents (final loss {loss:.3f}), so it emits
  `<|im_end|>` after a chat answer; saved in bfloat16; `generation_config.json` lists both
  `</s>` and `<|im_end|>` as EOS.

Built with `python scripts/build_tiny_chat.py --out fixtures` (after build_tiny_base.py).
Greedy reply to a chat-templated "Name the capital of Peru.": `{reply!r}`
"""


if __name__ == "__main__":
    sys.exit(main())
