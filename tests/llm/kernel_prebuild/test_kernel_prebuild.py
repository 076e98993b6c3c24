"""kernel_prebuild.helper: the helper process builds what the decoder asks for, and never hurts it."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from structlog.testing import capture_logs
from transformers import LlamaConfig, LlamaForCausalLM

from runner.llm.decoding import static_kv
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.decoding.sampling import Sampler
from runner.llm.kernel_prebuild import helper as kernel_prebuild
from runner.llm.kernel_prebuild import plan as kernel_plan
from runner.llm.loading.loader import LoadedModel

ROOT = Path(__file__).resolve().parents[3]
SMALL = dict(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=512, vocab_size=3000, pad_token_id=0, bos_token_id=None,
             eos_token_id=None)
triton = pytest.importorskip("triton")


class _Ids:
    pad_token_id, eos_token_id, bos_token_id = 0, None, None

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(map(str, ids))


def _env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "TRITON_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}


def _shape():
    return kernel_plan.shape_of(LlamaConfig(**SMALL), torch.bfloat16, (9, 0))


def test_start_returns_none_for_nothing_to_build():
    """No shape (CPU, float32, another family): no helper process."""
    assert kernel_prebuild.start(None) is None


def test_start_failing_to_launch_is_logged_not_raised(monkeypatch):
    """If the helper cannot even start, the caller goes on: a warning and None."""
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    with capture_logs() as logs:
        assert kernel_prebuild.start(_shape()) is None
    assert [e["event"] for e in logs] == ["kernel_prebuild_failed"]


def test_start_does_not_wait_for_the_helper(tmp_path):
    """start() returns while the helper is still building; stop() ends it."""
    helper = kernel_prebuild.start(_shape(), env=_env(tmp_path))
    assert helper is not None
    try:
        assert helper.process.poll() is None  # importing torch alone takes longer than this
    finally:
        helper.stop()
    assert helper.process.poll() is not None


def test_no_helper_where_one_built_everything_before(tmp_path):
    """A cache with an earlier helper's marker for this shape starts no process."""
    done = kernel_prebuild.marker(_shape(), _env(tmp_path))
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    with capture_logs() as logs:
        assert kernel_prebuild.start(_shape(), env=_env(tmp_path)) is None
    assert [e["event"] for e in logs] == ["kernel_prebuild_skipped"]


def test_marker_names_the_shape_and_cache():
    """Another shape or another cache folder is another marker."""
    other = kernel_plan.KernelShape(512, 8, 2, 64, 1024, 3000, "bfloat16", 90)
    a = kernel_prebuild.marker(_shape(), {"TRITON_CACHE_DIR": "/c1"})
    assert a.parent == Path("/c1/runner-prebuilt")
    assert a != kernel_prebuild.marker(other, {"TRITON_CACHE_DIR": "/c1"})
    assert a.name == kernel_prebuild.marker(_shape(), {"TRITON_CACHE_DIR": "/c2"}).name


def test_build_one_reports_a_failure_instead_of_raising():
    """A kernel that cannot be built is a record with ok False and the error."""
    record = kernel_prebuild.build_one("parts.softmax", _shape().to_json())
    assert record["ok"] is False and "no kernel" in record["error"]
    assert not kernel_prebuild._JITS  # refused before touching this process's kernels


def test_a_broken_helper_changes_no_generated_token(tmp_path, monkeypatch):
    """A helper that crashes at once (a bad shape) leaves generation exactly as without it."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    lm = LoadedModel(model, _Ids(), torch.device("cpu"), torch.float32, {}, "small")
    sp = SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.1, max_new_tokens=6)
    rows = [[5, 6, 7], [8, 9]]
    alone = generate(lm, rows, sp, seed=3)
    bad = kernel_plan.KernelShape(256, 4, 2, 64, 512, 3000, "no-such-dtype", 90)
    helper = kernel_prebuild.start(bad, env=_env(tmp_path))
    assert helper is not None
    assert generate(lm, rows, sp, seed=3) == alone
    with capture_logs() as logs:
        assert helper.finish(120) not in (None, 0)  # it did fail, and says what failed
    (event,) = logs
    assert event["event"] == "kernel_prebuild_failed" and "no-such-dtype" in event["error"]
    assert not kernel_prebuild.marker(bad, _env(tmp_path)).exists()  # so the next one tries


_PARENT = r"""
import json, sys, functools, torch, triton
from triton import knobs
from runner.llm.decoding import triton_parts, triton_sampling, triton_attention
from runner.llm.kernel_prebuild import helper as kernel_prebuild
calls = torch.load(sys.argv[1])
triton.runtime.driver.set_active(kernel_prebuild._CompileOnly(90))
heard = []
knobs.compilation.listener = lambda *, src, cache_hit, **_: heard.append(
    [src.fn.__name__, cache_hit])

class Warm:  # the parent's launch, minus the GPU: the same binder, key and cache lookup
    def __init__(self, jit): self.jit = jit
    def __getitem__(self, grid): return functools.partial(self.jit.warmup, grid=grid)

for n in triton_parts.NAMES: triton_parts._KERNELS[n] = Warm(triton_parts._kernel(n))
for n, k in list(triton_sampling._kernels().items()): triton_sampling._KERNELS[n] = Warm(k)
triton_attention._KERNELS[:] = [Warm(triton_attention._kernel())]
for q, k, cos, sin in calls["rotary"]: triton_parts.rotary(q, k, cos, sin)
for x, w in calls["norm"]: triton_parts.rms_norm(x, w, 1e-6)
for g, u in calls["mlp"]: triton_parts.silu_mul(g, u)
for logits, keys, step in calls["pick"]: triton_sampling.nucleus_draw(logits, keys, step, 0.8, 0.9)
for q, k, v, mask in calls["attention"]: triton_attention.decode_attention(q, k, v, mask, 0.125)
print(json.dumps(heard))
"""


def _captured_calls(monkeypatch) -> dict:
    """The tensors the decoder hands our kernels' wrappers, as laid out on the way there:
    a static-engine call (prefill and decode steps) of a bf16 Llama, recorded on CPU."""
    from transformers.models.llama import modeling_llama

    calls: dict = {"rotary": [], "norm": [], "mlp": [], "pick": [], "attention": []}
    rope = modeling_llama.apply_rotary_pos_emb

    def rotary(q, k, cos, sin, *a, **kw):
        calls["rotary"].append((q, k, cos, sin))
        return rope(q, k, cos, sin, *a, **kw)

    attention = static_kv._attention

    def attend(module, q, k, v, mask, *a, **kw):
        if q.shape[2] == 1:
            calls["attention"].append((q, k.clone(), v.clone(), mask))
        return attention(module, q, k, v, mask, *a, **kw)

    pick = Sampler.pick

    def picked(self, logits, seen, keys, step, variant):
        calls["pick"].append((self.penalise(logits.clone(), seen), keys.clone(), step.clone()))
        return pick(self, logits, seen, keys, step, variant)

    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", rotary)
    monkeypatch.setattr(static_kv, "_attention", attend)
    monkeypatch.setattr(Sampler, "pick", picked)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL)).to(torch.bfloat16).eval()
    for layer in model.model.layers[:1]:
        layer.input_layernorm.register_forward_pre_hook(
            lambda m, a: calls["norm"].append((a[0].contiguous(), m.weight)))
        layer.mlp.register_forward_pre_hook(lambda m, a: calls["mlp"].append(
            (m.gate_proj(a[0]), m.up_proj(a[0]))))
    lm = LoadedModel(model, _Ids(), torch.device("cpu"), torch.bfloat16, {}, "small")
    sp = SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.1, max_new_tokens=3)
    generate(lm, [list(range(3, 40)), list(range(5, 25))], sp, seed=1, engine="static")
    return calls


@pytest.mark.slow
def test_helper_builds_exactly_what_the_decoder_asks_for(tmp_path, monkeypatch):
    """After the helper, the decoder's own calls (prefill and decode-step layouts of a bf16
    Llama, recorded on CPU; the attention at the call's cache length, not the helper's) find
    every kernel in the cache: Triton builds nothing more."""
    calls = _captured_calls(monkeypatch)
    assert {q.shape[2] for q, *_ in calls["rotary"]} == {64, 1}  # prefill and decode steps
    shape = _shape()
    cache = tmp_path / "cache"
    helper = kernel_prebuild.start(shape, workers=1, env=_env(cache))
    assert helper is not None
    with capture_logs() as logs:
        assert helper.finish(600) == 0
    assert [e["event"] for e in logs] == ["kernel_prebuild_done"]
    records = helper.report()
    assert [r["kernel"] for r in records] == kernel_plan.plan(shape)
    assert all(r["ok"] for r in records), records
    assert kernel_prebuild.marker(shape, _env(cache)).exists()
    assert kernel_prebuild.start(shape, env=_env(cache)) is None  # nothing left to build
    torch.save(calls, tmp_path / "calls.pt")
    out = subprocess.run([sys.executable, "-c", _PARENT, str(tmp_path / "calls.pt")],
                         env=_env(cache), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    heard = json.loads(out.stdout.strip().splitlines()[-1])
    assert heard and all(hit for _, hit in heard), heard
    names = {name.removeprefix("_").removesuffix("_source") for name, _ in heard}
    assert names == {"rms_norm", "silu_mul", "rotary", "stats", "start", "mass", "compact",
                     "packed_mass", "narrow", "draw", "decode"}


_GPU_PARENT = r"""
import json, sys, torch
from triton import knobs
from transformers import LlamaConfig, LlamaForCausalLM
from runner.llm.kernel_prebuild import helper as kernel_prebuild
from runner.llm.kernel_prebuild import plan as kernel_plan
from runner.llm.loading.loader import LoadedModel
from runner.llm.decoding.generation import SamplingParams, generate
from runner.llm.critic.forward import next_token_logits
built = []
knobs.compilation.listener = lambda *, src, cache_hit, **_: None if cache_hit else built.append(
    src.fn.__name__)
config = LlamaConfig(**json.loads(sys.argv[1]))
with torch.device("cuda"):
    model = LlamaForCausalLM(config).to(torch.bfloat16).eval()

class Ids:
    pad_token_id, eos_token_id, bos_token_id = 0, None, None
    def decode(self, ids, skip_special_tokens=False): return " ".join(map(str, ids))

lm = LoadedModel(model, Ids(), torch.device("cuda"), torch.bfloat16, {}, "small")
sp = SamplingParams(temperature=0.8, top_p=0.9, repetition_penalty=1.1, max_new_tokens=16)
rows = [[3 + (i * 7 + j) % 2900 for j in range(40 + i % 9)] for i in range(128)]
generate(lm, rows, sp, seed=0)
next_token_logits(lm, rows[:8])
print(json.dumps(built))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_first_call_builds_nothing_after_the_helper(tmp_path):
    """On the GPU: after the helper, a fresh process's generate (batch 128, decode attention
    on) and critic call build no Triton kernel, and the helper never opened the GPU."""
    config = LlamaConfig(**SMALL)
    shape = kernel_plan.shape_of(config, torch.bfloat16, torch.cuda.get_device_capability())
    started = time.perf_counter()
    helper = kernel_prebuild.start(shape, env=_env(tmp_path))
    assert helper is not None and helper.wait(300) == 0
    print(f"helper: {time.perf_counter() - started:.2f} s")
    assert all(r["ok"] and r["launcher"] == "built" for r in helper.report()), helper.report()
    out = subprocess.run([sys.executable, "-c", _GPU_PARENT, json.dumps(SMALL)],
                         env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_start_for_builds_nothing_for_a_cpu_model():
    """A model loading on CPU uses no Triton kernel: no helper."""
    assert kernel_prebuild.start_for(LlamaConfig(**SMALL), torch.bfloat16,
                                     torch.device("cpu")) is None
