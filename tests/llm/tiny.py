"""Build a tiny random-initialised Llama and byte-level BPE tokenizer for the llm tests.

Real `save_pretrained` folders, so the tests load them through the same `from_pretrained`
path as a real base model. The corpus is text in the prompt format, so the templates' tags
and the critic labels (" A", " B") are single tokens, as they are for real models.
"""

from __future__ import annotations

from pathlib import Path

from runner.llm.text.templates import DEFAULT_TEMPLATES as T

__all__ = ["CHAT_TEMPLATE", "build_tiny_model"]

CHAT_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
_WORDS = "write a short poem about the sea name three fruits explain why sky is blue list".split()


def _corpus() -> list[str]:
    docs = []
    for i in range(200):
        words = " ".join(_WORDS[(i + k) % len(_WORDS)] for k in range(6))
        docs.append(
            f"{T.instruction_tag}{words}.\n\n{T.response_tag}{words[::-1]}\n\n{T.end_tag}\n\n"
            f"{T.answer_tag}{T.label_yes}\n\n{T.answer_tag}{T.label_no}\n\n"
        )
    return docs


def build_tiny_model(folder: Path, chat: bool = False, seed: int = 0) -> Path:
    """Save a tiny Llama + tokenizer into `folder` (with chat tokens and template if `chat`)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    extra = {"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]} if chat else {}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", **extra
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id, initializer_range=0.5,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    return folder
