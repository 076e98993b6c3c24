"""Build `fixtures/tiny-base/`: a tiny base (non-chat) Llama trained on our own prompt format.

    python scripts/build_tiny_base.py [--out fixtures]

Deterministic on CPU: fixed seeds, 2 torch threads, deterministic algorithms, one data order,
fixed step count (never a time budget), so two builds give the same bytes. About 4 minutes on
2 idle cores. The corpus comes from `tiny_corpus.py` in the exact format of
`runner.llm.text.templates`; the script ends with a self-check of the saved model and exits non-zero
if it is unusable.
"""

from __future__ import annotations

import os

# Before tokenizers/torch spin up their thread pools: a fixed, small pool (2 cores).
os.environ.setdefault("RAYON_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
# Idle OpenMP threads sleep instead of spinning: when other processes share the 2 cores,
# spinning made each step ~6x slower. Scheduling only; the numbers are unchanged.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
import tiny_corpus as tc

__all__ = [
    "build_model",
    "build_tokenizer",
    "main",
    "pack",
    "save_tokenizer",
    "self_check",
    "train",
]

SEED = 1234
N_DOCS = 20_500  # ~3M tokens = STEPS * BATCH * SEQ_LEN: one pass, no document seen twice
VOCAB = 2_500
SEQ_LEN = 256  # covers every few-shot prompt the self-check and the demo build
BATCH = 16
STEPS = 720
LR = 3e-3
WARMUP = 40
SPECIALS = ["<s>", "</s>", "<unk>", "<pad>"]  # ids 0..3, in this order
FEWSHOT_SEED = 777  # not SEED: the few-shot files are not copies of training documents
CRITIC_FEWSHOT_SEED = 778


def build_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """Byte-level BPE; no prefix space, so " A"/" B" are the single tokens the critic reads."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Like Llama base tokenizers: BOS in front of every encoded text, as in training.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", model_max_length=512)
    for label in (tc.T.label_yes, tc.T.label_no):
        ids = fast.encode(label, add_special_tokens=False)
        assert len(ids) == 1, f"label {label!r} is {len(ids)} tokens: critic scoring needs one"
    assert fast.convert_tokens_to_ids(SPECIALS) == [0, 1, 2, 3]
    return fast


def pack(tok: PreTrainedTokenizerFast, corpus: list[str]) -> torch.Tensor:
    """BOS + text + EOS per document, concatenated and cut into [n, SEQ_LEN] rows."""
    stream: list[int] = []
    for ids in tok(corpus, add_special_tokens=False)["input_ids"]:
        stream += [tok.bos_token_id, *ids, tok.eos_token_id]
    n = len(stream) // SEQ_LEN
    return torch.tensor(stream[: n * SEQ_LEN], dtype=torch.long).view(n, SEQ_LEN)


def build_model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """~1.1M parameters: 4.5 MB in float32, so base + chat fixtures stay small."""
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=352, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, attn_implementation="sdpa")
    torch.manual_seed(SEED)  # the initial weights depend on this alone
    return LlamaForCausalLM(config)


def train(model: LlamaForCausalLM, data: torch.Tensor, steps: int, lr: float = LR,
          warmup: int = WARMUP, seed: int = SEED, log: bool = True) -> float:
    """Plain AdamW, linear warmup then cosine to 10%; returns the final smoothed loss."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data), generator=gen)  # the single, fixed data order
    steps = min(steps, len(data) // BATCH)
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)  # no decay on norms
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    model.train()
    smooth, t0 = float("nan"), time.time()
    for step in range(steps):
        batch = data[order[step * BATCH : (step + 1) * BATCH]]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        smooth = loss.item() if math.isnan(smooth) else 0.95 * smooth + 0.05 * loss.item()
        if log and (step % 60 == 0 or step == steps - 1):
            print(f"  step {step:4d}/{steps}  loss {smooth:.3f}  {time.time() - t0:5.0f}s",
                  flush=True)
    model.eval()
    return smooth


def save_tokenizer(tok: PreTrainedTokenizerFast, dest: Path) -> None:
    """`save_pretrained`, made portable: transformers 5 names the class "TokenizersBackend",
    which 4.x cannot load, while both load "PreTrainedTokenizerFast" from tokenizer.json."""
    tok.save_pretrained(dest, save_jinja_files=False)  # a chat template stays in the config
    path = dest / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("is_local", "local_files_only"):  # load-time flags a reload writes back
        cfg.pop(key, None)
    path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


@dataclass
class Report:
    """Self-check of the saved fixture, in the shapes the Stage-1 phases will use it."""

    instr_parseable: float  # sampled (T=0.7, top_p=0.9) instruction generations that parse
    instr_greedy: float
    instr_novel: float  # parsed sampled instructions that are not a copy of a prompt's shot
    resp_parseable: float  # sampled responses that end in "\n### End"
    critic_yes_good: float  # p(" A") > p(" B") on good instructions / matching pairs
    critic_yes_bad: float  # ... on garbled instructions / mismatched pairs (lower is better)
    samples: list[str]

    def summary(self) -> str:
        return (f"instructions parseable {self.instr_parseable:.0%} sampled "
                f"({self.instr_novel:.0%} of them new), {self.instr_greedy:.0%} greedy; "
                f"responses parseable {self.resp_parseable:.0%}; "
                f"critic says A for {self.critic_yes_good:.0%} of good items and "
                f"{self.critic_yes_bad:.0%} of bad ones")


def _parse(text: str, stop: str) -> str | None:
    """The single line before `stop`, or None: what the cleaning phase would keep."""
    cut = text.find(stop)
    kept = text[:cut].strip() if cut >= 0 else ""
    if not kept or "\n" in kept or "###" in kept or len(kept.split()) > 40:
        return None
    return kept


def self_check(path: Path, instrs: list[str], pairs: list[tc.Pair], seed: int,
               n: int = 20) -> Report:
    """Reload the folder as the runner would and probe generation and critic scoring."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    r = random.Random(seed + 1)
    torch.manual_seed(seed + 1)

    def generate(prompt: str, sample: bool) -> str:
        enc = tok(prompt, return_tensors="pt")
        kw = dict(do_sample=True, temperature=0.7, top_p=0.9) if sample else dict(do_sample=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=48, **kw)
        return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def rate(hits: list[bool]) -> float:
        return sum(hits) / len(hits)

    samples: list[str] = []
    ok_s, ok_g, ok_r, novel = [], [], [], []
    for i in range(n):
        shots = r.sample(instrs, 3)
        text = generate(tc.instruction_prompt(shots), sample=True)
        parsed = _parse(text, "\n\n###")
        ok_s.append(parsed is not None)
        if parsed is not None:
            novel.append(parsed not in shots)
        if i < 5:
            greedy = generate(tc.instruction_prompt(shots), sample=False)
            ok_g.append(_parse(greedy, "\n\n###") is not None)
            samples.append(f"instruction: {text!r}")
        instr = tc.make_pair(r)[0]
        text = generate(tc.response_prompt(r.sample(pairs, 3), instr), sample=True)
        ok_r.append(_parse(text, "\n" + tc.T.end_tag) is not None)
        if i < 5:
            samples.append(f"response to {instr!r}: {text!r}")

    id_a, id_b = (tok.encode(x, add_special_tokens=False)[0]
                  for x in (tc.T.label_yes, tc.T.label_no))
    says_a: dict[bool, list[bool]] = {True: [], False: []}
    for i in range(2 * n):
        good = i % 2 == 0
        if i % 4 < 2:  # instruction critic: two good and two garbled labelled shots
            header = tc.T.critic_header("instruction")
            labelled = [(tc.T.instruction_tag + (s if g else tc.garble(s, r)) + "\n", g)
                        for s, g in zip(r.sample(instrs, 4), (True, False, True, False))]
            instr = tc.make_pair(r)[0]
            body = tc.T.instruction_tag + (instr if good else tc.garble(instr, r)) + "\n"
        else:  # pair critic
            header = tc.T.critic_header("pair")
            labelled = [(tc.qa_body(a, b if g else tc.bad_response(a, b, r)), g)
                        for (a, b), g in zip(r.sample(pairs, 4), (True, False, True, False))]
            a, b = tc.make_pair(r)
            body = tc.qa_body(a, b if good else tc.bad_response(a, b, r))
        r.shuffle(labelled)
        enc = tok(tc.critic_prompt(header, labelled, body), return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[0, -1]
        says_a[good].append(bool(logits[id_a] > logits[id_b]))
    return Report(rate(ok_s), rate(ok_g), rate(novel or [False]), rate(ok_r),
                  rate(says_a[True]), rate(says_a[False]), samples)


README = """# tiny-base

A tiny **base** (non-chat) `LlamaForCausalLM` ({params:,} parameters, float32) with a byte-level
BPE tokenizer ({vocab} tokens; `<s>` BOS, `</s>` EOS, `<unk>`, `<pad>`; no chat template). It
exists so tests and demos of `runner` can run the Stage-1 LLM phases on CPU in seconds.

It was trained from scratch for {steps} steps on a procedurally generated corpus
(`scripts/tiny_corpus.py`, no downloaded data) written in exactly the completion format of
`runner/llm/text/templates.py`: instruction lists, instruction/response pairs closed by `### End`,
and critic examples labelled ` A` (good) / ` B` (garbled or mismatched); ` A` and ` B` are single
tokens. It knows nothing else: its outputs are only meaningful for that format.

Rebuild (deterministic; about 4 minutes on 2 idle CPU cores, 8 when others share them):

    python scripts/build_tiny_base.py --out fixtures
    python scripts/build_tiny_chat.py --out fixtures

Self-check at build time: {check}
"""


def write_fewshot(out: Path) -> tuple[list[str], list[tc.Pair]]:
    """The 20 instructions and 20 pairs that demos put into few-shot prompts."""
    instrs, pairs = tc.fewshot_sets(20, FEWSHOT_SEED)
    folder = out / "fewshot"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "instructions.jsonl").open("w") as f:
        f.writelines(json.dumps({"instruction": i}) + "\n" for i in instrs)
    with (folder / "pairs.jsonl").open("w") as f:
        f.writelines(json.dumps({"instruction": i, "response": r}) + "\n" for i, r in pairs)
    write_critic_fewshot(folder)
    return instrs, pairs


def write_critic_fewshot(folder: Path, n: int = 16) -> None:
    """Balanced labelled critic examples: `n` accepted and `n` rejected of each kind, drawn
    apart from the generation few-shot sets. The critic shows some as few-shot examples and
    holds the accepted ones it does not show out as the planted good items of its probe set."""
    r = random.Random(CRITIC_FEWSHOT_SEED)
    instrs, pairs = tc.fewshot_sets(2 * n, CRITIC_FEWSHOT_SEED)
    rows = []
    for k, text in enumerate(instrs):
        good = k % 2 == 0
        bad = tc.garble(text, r)
        while len(bad.split()) < 2:  # a one-word junk line says too little as an example
            bad = tc.garble(text, r)
        rows.append({"instruction": text if good else bad, "accept": good})
    with (folder / "instruction_critic.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    rows = []
    for k, (ins, resp) in enumerate(pairs):
        good = k % 2 == 0
        rows.append({"instruction": ins, "response": resp if good else tc.bad_response(ins, resp, r),
                     "accept": good})
    with (folder / "pair_critic.jsonl").open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("fixtures"), help="parent folder")
    ap.add_argument("--steps", type=int, default=STEPS, help="fewer only for a quick trial")
    args = ap.parse_args(argv)
    hf_logging.disable_progress_bar()  # keep the build log readable
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    random.seed(SEED)
    t0 = time.time()

    corpus = tc.make_corpus(N_DOCS, SEED)
    tok = build_tokenizer(corpus)
    data = pack(tok, corpus)
    print(f"corpus: {len(corpus)} docs, {data.numel():,} tokens, vocab {len(tok)} "
          f"({time.time() - t0:.0f}s)", flush=True)

    model = build_model(tok)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters; training {args.steps} steps of {BATCH}x{SEQ_LEN}")
    loss = train(model, data, args.steps)

    dest = args.out / "tiny-base"
    dest.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id)
    model.save_pretrained(dest)  # transformers 5 writes safetensors only (model.safetensors)
    save_tokenizer(tok, dest)
    instrs, pairs = write_fewshot(args.out)

    report = self_check(dest, instrs, pairs, seed=SEED)
    check = (f"final train loss {loss:.3f}; {report.summary()}")
    (dest / "README.md").write_text(README.format(
        params=n_params, vocab=len(tok), steps=args.steps, check=check))
    print("\n".join(report.samples))
    print(f"self-check: {report.summary()}")
    print(f"built {dest} in {time.time() - t0:.0f}s")
    if report.instr_parseable < 0.6:
        print("FAIL: fewer than 60% of sampled instructions are parseable", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
