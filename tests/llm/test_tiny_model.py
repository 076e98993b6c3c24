"""The tiny model fixtures (`fixtures/tiny-base`, `fixtures/tiny-chat`) load offline and behave.

They are built by `scripts/build_tiny_base.py` and `scripts/build_tiny_chat.py`; these tests
pin what the rest of the suite relies on: the prompt format of `runner.llm.text.templates` works
on tiny-base, the critic labels are single tokens, and only tiny-chat looks like a chat model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers import PreTrainedTokenizerBase as Tok

from runner.llm.text.templates import DEFAULT_TEMPLATES as T

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BASE, CHAT = FIXTURES / "tiny-base", FIXTURES / "tiny-chat"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: a 1M-parameter model gains nothing from more, and with 2 threads on
    cores that other processes keep busy, OpenMP spin-waiting made generation ~30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_tok() -> Tok:
    return AutoTokenizer.from_pretrained(BASE)


@pytest.fixture(scope="module")
def base_model() -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def chat_tok() -> Tok:
    return AutoTokenizer.from_pretrained(CHAT)


def _fewshot_instructions() -> list[str]:
    lines = (FIXTURES / "fewshot" / "instructions.jsonl").read_text().splitlines()
    return [json.loads(line)["instruction"] for line in lines]


def _next_token_logits(model: PreTrainedModel, tok: Tok, prompt: str) -> torch.Tensor:
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[0, -1]


def test_base_greedy_instruction_is_parseable(
    base_tok: Tok, base_model: PreTrainedModel
) -> None:
    """A 3-shot instruction prompt yields one instruction line, then the `\\n\\n###` delimiter."""
    shots = _fewshot_instructions()[:3]
    prompt = T.instruction_header + "".join(
        T.instruction_tag + s + T.example_separator for s in shots) + T.instruction_tag
    enc = base_tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = base_model.generate(**enc, max_new_tokens=40, do_sample=False)
    text = base_tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    instruction, sep, _ = text.partition("\n\n###")
    assert sep and instruction.strip() and "\n" not in instruction.strip()


def test_base_label_tokens_are_single(base_tok: Tok) -> None:
    """` A` and ` B` each encode to exactly one token, and to different ones."""
    ids = [base_tok.encode(x, add_special_tokens=False) for x in (T.label_yes, T.label_no)]
    assert [len(i) for i in ids] == [1, 1] and ids[0] != ids[1]


def test_base_critic_prefers_a_for_good_instruction(
    base_tok: Tok, base_model: PreTrainedModel
) -> None:
    """The instruction critic scores ` A` above ` B` for a clear instruction."""
    shots = _fewshot_instructions()
    sep = T.example_separator
    prompt = (T.critic_header("instruction")
              + T.instruction_tag + shots[0] + "\n" + T.answer_tag + T.label_yes + sep
              + T.instruction_tag + "the the the\n" + T.answer_tag + T.label_no + sep
              + T.instruction_tag + shots[1] + "\n" + T.answer_tag)
    logits = _next_token_logits(base_model, base_tok, prompt)
    a, b = (base_tok.encode(x, add_special_tokens=False)[0] for x in (T.label_yes, T.label_no))
    assert logits[a] > logits[b]


def test_base_has_no_chat_template(base_tok: Tok) -> None:
    """tiny-base is a plain base model: no chat template and no chat tokens."""
    vocab = base_tok.get_vocab()
    assert base_tok.chat_template is None and not any(t in vocab for t in CHAT_TOKENS)


def test_base_special_tokens(base_tok: Tok) -> None:
    """BOS/EOS/UNK/PAD are `<s>`, `</s>`, `<unk>`, `<pad>`, and encoding prepends BOS."""
    specials = (base_tok.bos_token, base_tok.eos_token, base_tok.unk_token, base_tok.pad_token)
    assert specials == ("<s>", "</s>", "<unk>", "<pad>")
    assert base_tok("hello").input_ids[0] == base_tok.bos_token_id


def test_chat_has_chat_tokens(chat_tok: Tok) -> None:
    """tiny-chat's tokenizer has `<|im_start|>`/`<|im_end|>` as single special tokens."""
    ids = [chat_tok.encode(t, add_special_tokens=False) for t in CHAT_TOKENS]
    assert all(len(i) == 1 for i in ids)
    assert set(CHAT_TOKENS) <= set(chat_tok.all_special_tokens)


def test_chat_template_in_tokenizer_config() -> None:
    """tiny-chat's tokenizer_config.json carries a ChatML chat_template."""
    config = json.loads((CHAT / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in config.get("chat_template", "")


def test_chat_embeddings_match_tokenizer(chat_tok: Tok) -> None:
    """tiny-chat's embedding matrix was resized to the enlarged vocabulary."""
    model = AutoModelForCausalLM.from_pretrained(CHAT)
    assert model.get_input_embeddings().weight.shape[0] == len(chat_tok)


def test_fixture_folders_are_small() -> None:
    """Each model folder stays within 8 MB."""
    for folder in (BASE, CHAT):
        size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        assert size <= 8 * 1024 * 1024, folder


def test_fewshot_files_have_twenty_lines() -> None:
    """The demo's few-shot files hold 20 instructions and 20 instruction/response pairs."""
    folder = FIXTURES / "fewshot"
    instrs = [json.loads(x) for x in (folder / "instructions.jsonl").read_text().splitlines()]
    pairs = [json.loads(x) for x in (folder / "pairs.jsonl").read_text().splitlines()]
    assert len(instrs) == len(pairs) == 20
    assert all(set(p) == {"instruction", "response"} for p in pairs)
