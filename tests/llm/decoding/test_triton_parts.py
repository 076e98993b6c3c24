"""The Triton norm, rotary and SiLU-product kernels against the model's own modules.

On CPU the kernels run in Triton's interpreter in float16 (it multiplies bf16 as integers);
on CUDA in bf16.
"""

import pytest
import torch
import torch.nn.functional as F

from runner.llm.decoding import compiled_parts, triton_parts
from runner.llm.loading import loader

pytest.importorskip("triton")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float16


@pytest.fixture
def model(tiny_model, fresh_loader):
    """The tiny Llama in the kernels' dtype."""
    return loader.load_model({"path": str(tiny_model)}).model.to(DEVICE, DTYPE)


FAMILIES = ["llama", "mistral", "qwen2", "qwen3"]


def _family_model(model_type: str):
    """A tiny random model of the family (config only: the family's own module classes)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, vocab_size=256, head_dim=16)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(DEVICE, DTYPE).eval()


def _steps(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """|a - b| in units of the rounding step of `dtype` (default b's) at b's size."""
    size = torch.exp2(b.double().abs().clamp_min(1e-3).log2().floor())
    return (a.double() - b.double()).abs() / (torch.finfo(dtype or b.dtype).eps * size)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(DEVICE, DTYPE)


def test_rms_norm_is_the_modules_norm_to_one_rounding_step(model):
    """Within one rounding step of the model's RMSNorm everywhere, and equal almost always."""
    norm = model.model.norm
    norm.weight.data = _randn(norm.weight.shape[0], seed=1)
    x = _randn(3, 5, norm.weight.shape[0]) * 4
    ours = triton_parts.rms_norm(x, norm.weight, norm.variance_epsilon)
    theirs = norm(x)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert _steps(ours, theirs).max() <= 1 and (ours == theirs).float().mean() > 0.97


def _exact_rotation(family, q, k, cos, sin) -> tuple[torch.Tensor, torch.Tensor]:
    """The family's formula in float64 on the same (rounded) inputs."""
    return family.apply_rotary_pos_emb(q.double(), k.double(), cos.double(), sin.double())


def _correctly_rounded(ours: torch.Tensor, exact: torch.Tensor) -> bool:
    """ours is exact rounded once to its dtype: within half a step (plus double rounding's
    sliver, since the kernel rounds to float32 first)."""
    return bool(_steps(ours, exact, ours.dtype).max() <= 0.501)


def test_rotary_is_the_family_rotation_rounded_once(model):
    """q and k laid out as attention makes them (a transposed view): the correctly rounded
    rotation, and the family function's result to its own roundings."""
    family = compiled_parts.family_module(model)
    batch, seq, heads, kv_heads, dim = 2, 3, 4, 2, 16
    q = _randn(batch, seq, heads, dim, seed=2).transpose(1, 2)
    k = _randn(batch, seq, kv_heads, dim, seed=3).transpose(1, 2)
    angles = torch.rand(batch, seq, dim, generator=torch.Generator().manual_seed(4)) * 6
    cos, sin = angles.cos().to(DEVICE, DTYPE), angles.sin().to(DEVICE, DTYPE)
    ours = triton_parts.rotary(q, k, cos, sin)
    exact = _exact_rotation(family, q, k, cos, sin)
    theirs = family.apply_rotary_pos_emb(q, k, cos, sin)
    assert all(_correctly_rounded(o, e) for o, e in zip(ours, exact))
    # Eager rounds each product: at most a step of the products' size apart.
    assert all((o.float() - t.float()).abs().max() < 4 * torch.finfo(DTYPE).eps * q.abs().max()
               for o, t in zip(ours, theirs))


def test_rotary_broadcasts_cos_and_sin_of_one_batch_row(model):
    """cos and sin of shape (1, seq, dim), as with shared position ids, serve every row."""
    family = compiled_parts.family_module(model)
    q, k = _randn(3, 4, 2, 8, seed=5), _randn(3, 2, 2, 8, seed=6)
    cos, sin = _randn(1, 2, 8, seed=7), _randn(1, 2, 8, seed=8)
    ours = triton_parts.rotary(q, k, cos, sin)
    exact = _exact_rotation(family, q, k, cos, sin)
    assert all(_correctly_rounded(o, e) for o, e in zip(ours, exact))


def test_silu_mul_is_the_eager_product_to_one_rounding_step():
    """silu(gate) * up over more than one program's block, within one rounding step."""
    gate, up = _randn(5, 700, seed=9) * 3, _randn(5, 700, seed=10)
    ours = triton_parts.silu_mul(gate, up)
    theirs = F.silu(gate) * up
    assert _steps(ours, theirs).max() <= 1 and (ours == theirs).float().mean() > 0.97


def test_switched_on_replaces_norms_mlps_and_rotary_then_restores_them(model):
    """Inside the block the norms and MLPs carry our calls and the family function is ours."""
    family = compiled_parts.family_module(model)
    rotary = family.apply_rotary_pos_emb
    norms = [m for m in model.modules() if type(m).__name__ == "LlamaRMSNorm"]
    mlps = [layer.mlp for layer in model.model.layers]
    with triton_parts.switched_on(model):
        assert family.apply_rotary_pos_emb is not rotary
        assert all(m._compiled_call_impl is not None for m in norms + mlps)
    assert family.apply_rotary_pos_emb is rotary
    assert all(m._compiled_call_impl is None for m in norms + mlps)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_norm_and_mlp_of_each_family_is_taken(family):
    """Llama, Mistral, Qwen2 and Qwen3 (with its per-head q/k norms): every RMSNorm and MLP,
    and the family's own rotary function."""
    model = _family_model(family)
    taken = {id(m) for m, _ in triton_parts._calls(model)}
    wanted = [m for m in model.modules() if type(m).__name__.endswith(("RMSNorm", "MLP"))]
    assert taken == {id(m) for m in wanted}
    assert callable(compiled_parts.family_module(model).apply_rotary_pos_emb)


def test_a_module_with_hooks_is_left_alone(model):
    """A hook would be skipped by a replaced call, so a hooked norm keeps its own forward."""
    norm = model.model.norm
    norm.register_forward_hook(lambda *a: None)
    with triton_parts.switched_on(model):
        assert norm._compiled_call_impl is None


@pytest.mark.skipif(DEVICE.type == "cuda", reason="the CPU fallback")
def test_on_cpu_the_block_leaves_the_models_output_unchanged(model):
    """Calls the kernels do not take (CPU tensors) go to the model's own ops: same logits."""
    ids = torch.tensor([[1, 5, 9, 3]])
    plain = model(ids).logits
    with triton_parts.switched_on(model):
        assert torch.equal(model(ids).logits, plain)


def test_usable_only_for_half_precision_cuda_models_of_known_families(model, monkeypatch):
    """CUDA and bf16/fp16 and a Llama/Mistral/Qwen family, and not when switched off."""
    cuda = torch.device("cuda")  # a Hopper card, as far as `triton_support` asks
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert triton_parts.usable(model, cuda, torch.bfloat16)
    assert not triton_parts.usable(model, torch.device("cpu"), torch.bfloat16)
    assert not triton_parts.usable(model, cuda, torch.float32)
    monkeypatch.setattr(model.config, "model_type", "gemma")
    assert not triton_parts.usable(model, cuda, torch.bfloat16)
    monkeypatch.setattr(model.config, "model_type", "llama")
    monkeypatch.setattr(triton_parts, "ENABLED", False)
    assert not triton_parts.usable(model, cuda, torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs CUDA")
@pytest.mark.parametrize("family", FAMILIES)
def test_cuda_each_family_runs_the_kernels_and_keeps_its_logits(family, monkeypatch):
    """bf16 on CUDA, each family: every norm, MLP and rotary call goes through a kernel, and
    the logits stay within rounding of the model's own."""
    model = _family_model(family)
    _forward_through_kernels(model, monkeypatch)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs CUDA")
def test_cuda_model_forward_runs_the_kernels_and_keeps_its_logits(model, monkeypatch):
    """The tiny Llama as the loader gives it: the same."""
    _forward_through_kernels(model, monkeypatch)


def _forward_through_kernels(model, monkeypatch) -> None:
    used = {"rms_norm": 0, "silu_mul": 0, "rotary": 0}
    for name in used:
        kernel = getattr(triton_parts, name)
        monkeypatch.setattr(triton_parts, name,
                            lambda *a, _k=kernel, _n=name: used.__setitem__(_n, used[_n] + 1)
                            or _k(*a))
    ids = torch.randint(1, 200, (4, 9), generator=torch.Generator().manual_seed(0)).to(DEVICE)
    plain = model(ids).logits.float()
    with triton_parts.switched_on(model):
        ours = model(ids).logits.float()
    layers = len(model.model.layers)
    norms = sum(type(m).__name__.endswith("RMSNorm") for m in model.modules())
    assert used == {"rms_norm": norms, "silu_mul": layers, "rotary": layers}
    assert (ours - plain).abs().max() < 0.05 * plain.abs().max()
