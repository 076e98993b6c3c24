"""Clean base-model loading: memo, provenance, BOS policy, chat-template removal, denylist."""

import pytest
import torch

from runner.llm.loading import loader
from runner.llm.loading.contamination import ContaminationError, role_markers


def test_model_loaded_once_per_process(tiny_model, fresh_loader):
    """Two phases naming one model share a single load."""
    before = loader.load_count()
    first = loader.load_model({"path": str(tiny_model)})
    assert loader.load_model({"path": str(tiny_model)}) is first and loader.load_count() == before + 1


def test_auto_and_explicit_spelling_share_one_load(tiny_model, fresh_loader):
    """`auto` and the dtype/device it resolves to are one memo entry."""
    first = loader.load_model({"path": str(tiny_model)})
    assert loader.load_model({"path": str(tiny_model), "dtype": "float32", "device": "cpu"}) is first


def test_provenance_records_hashes_dtype_device(tiny_model, fresh_loader):
    """Provenance holds path, revision, config/weights/tokenizer sha256, dtype and device."""
    prov = loader.load_model({"path": str(tiny_model)}).provenance
    hashes = ("config_sha256", "weights_sha256", "tokenizer_sha256")
    assert [len(prov[k]) for k in hashes] == [64, 64, 64]
    assert (prov["path"], prov["dtype"], prov["device"]) == (str(tiny_model), "float32", "cpu")


def test_fingerprint_loads_no_model(tiny_model, fresh_loader):
    """Hashing the model folder loads no model."""
    before = loader.load_count()
    loader.model_fingerprint({"path": str(tiny_model)})
    assert loader.load_count() == before


def test_dtype_auto_on_cpu_is_float32():
    """dtype auto resolves to float32 on CPU."""
    assert loader.resolve_dtype("auto", torch.device("cpu")) is torch.float32


def test_bad_dtype_is_an_error():
    """An unknown dtype fails naming the allowed ones."""
    with pytest.raises(loader.ModelLoadError, match="float64"):
        loader.resolve_dtype("float64", torch.device("cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_explicit_cuda_without_cuda_fails():
    """device: cuda on a machine without CUDA is an error, not a silent CPU run."""
    with pytest.raises(loader.ModelLoadError, match="CUDA is not available"):
        loader.resolve_device("cuda")


def test_chat_template_removed_and_recorded(chat_model, fresh_loader):
    """The tokenizer's chat template is removed and the provenance says so."""
    lm = loader.load_model({"path": str(chat_model)})
    removed, applied = (lm.provenance[k] for k in ("chat_template_removed", "chat_template_applied"))
    assert (lm.tokenizer.chat_template, removed, applied) == (None, True, False)


def test_encode_prepends_bos_and_nothing_else(tiny_model, fresh_loader):
    """Prompts get BOS first and no other special token (no EOS appended)."""
    lm = loader.load_model({"path": str(tiny_model)})
    ids = lm.encode(["### Instruction:\n"])[0]
    plain = lm.tokenizer("### Instruction:\n", add_special_tokens=False)["input_ids"]
    assert ids == [lm.tokenizer.bos_token_id, *plain]


def test_denylist_holds_chat_tokens_not_bos_eos_pad(chat_model, fresh_loader):
    """The denylist has the chat tokens and none of BOS/EOS/PAD."""
    lm = loader.load_model({"path": str(chat_model)})
    assert sorted(lm.denylist.values()) == ["<|im_end|>", "<|im_start|>"]


def test_plain_tokenizer_has_empty_denylist(tiny_model, fresh_loader):
    """A tokenizer without chat tokens denies nothing."""
    assert loader.load_model({"path": str(tiny_model)}).denylist == {}


def test_contamination_error_names_token_and_prompt_id(chat_model, fresh_loader):
    """A prompt holding a chat token fails naming the token and the prompt's id."""
    lm = loader.load_model({"path": str(chat_model)})
    expected = r"prompt 'gen/i1' contains the chat-format token '<\|im_start\|>'"
    with pytest.raises(ContaminationError, match=expected):
        lm.check_prompts(["plain text", "<|im_start|>user hi"], ["gen/i0", "gen/i1"], "gen")


def test_sentinel_runs_without_cudnn_attention(tiny_model, fresh_loader, monkeypatch):
    """The sentinel's generate runs with cuDNN's attention switched off (a plan per new shape,
    and each step is one), and the switch is restored after it."""
    from transformers import LlamaForCausalLM

    seen: list[bool] = []
    original = LlamaForCausalLM.generate

    def recording(self, *args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "generate", recording)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    loader.load_model({"path": str(tiny_model)})
    assert seen == [False]
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_sentinel_recorded_in_provenance(tiny_model, fresh_loader):
    """The sentinel prompt and its greedy completion are in the provenance."""
    sentinel = loader.load_model({"path": str(tiny_model)}).provenance["sentinel"]
    assert sentinel["prompt"] == loader.SENTINEL_PROMPT and isinstance(sentinel["output"], str)


def test_role_markers_found_in_chat_output():
    """Chat role markers in a sentinel output are detected."""
    assert role_markers("Lyon<|im_end|>\nassistant: sure") == ["<|im_end|>", "assistant:"]


def test_role_markers_absent_from_plain_text():
    """Plain completion text has no role markers."""
    assert role_markers("Lyon and Marseille. The user of") == []


def test_sentinel_warns_when_model_talks_chat(chat_model, tmp_path, fresh_loader):
    """A model whose greedy sentinel output holds chat markers is loudly flagged."""
    from structlog.testing import capture_logs
    from transformers import AutoModelForCausalLM

    # Every token embeds alike and the layers add nothing, so the last hidden state is the
    # same for any prompt; aiming <|im_start|>'s output row at it makes greedy emit it.
    model = AutoModelForCausalLM.from_pretrained(str(chat_model))
    marker = loader.load_tokenizer({"path": str(chat_model)}).convert_tokens_to_ids("<|im_start|>")
    with torch.no_grad():
        model.model.embed_tokens.weight[:] = model.model.embed_tokens.weight[0]
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hidden = model.model.norm(model.model.embed_tokens.weight[:1])[0]
        model.lm_head.weight[marker] = hidden * 100
    model.save_pretrained(str(tmp_path))
    for f in chat_model.iterdir():
        if f.name.startswith(("tokenizer", "chat_template")):
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with capture_logs() as logs:
        lm = loader.load_model({"path": str(tmp_path)})
    events = [e["event"] for e in logs]
    assert "<|im_start|>" in lm.provenance["sentinel"]["warning"]
    assert "sentinel_chat_markers" in events


def test_fingerprint_soon_hashes_on_a_thread_once(tiny_model, fresh_loader):
    """fingerprint_soon returns at once with a future; the hash is model_fingerprint's, once."""
    spec = {"path": str(tiny_model)}
    future = loader.fingerprint_soon(spec)
    assert loader.fingerprint_soon(spec) is future
    assert future.result() == loader.model_fingerprint(spec)
    assert len(future.result().weights_sha256) == 64


def test_fingerprint_soon_refuses_a_bad_folder_at_once(tmp_path, fresh_loader):
    """A folder without weights is refused by the call itself, not later on the thread."""
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(loader.ModelLoadError, match="weights in"):
        loader.fingerprint_soon({"path": str(tmp_path)})
