"""The Triton flash attention (kernels/attention.py) against the naive reference.

Without CUDA everything runs in the Triton interpreter (small shapes; bf16 is GPU-only there). The full
shape grid is marked slow; a representative subset covering every T and every head dim runs by default.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, run_module

from gpt.config import ModelConfig
from gpt.model import GPT
from gpt.model.attention import naive_attention
from kernels import attention as fa
from kernels.attention import flash_attention

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}  # fp32: abs+rel 1e-4 vs an fp32 reference


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def qkv(B: int, H: int, Tq: int, Tk: int, D: int, dtype=torch.float32, device=DEVICE):
    make = lambda t: torch.randn(B, H, t, D, device=device, dtype=dtype, requires_grad=True)  # noqa: E731
    return make(Tq), make(Tk), make(Tk)


def check_against_reference(q, k, v, grads: bool = True) -> None:
    """Output and dQ/dK/dV of the kernel vs naive attention on the same inputs upcast to fp32."""
    tol = TOL[q.dtype]
    out = flash_attention(q, k, v)
    assert out.dtype == q.dtype and out.shape == q.shape
    ref_in = [t.detach().float().requires_grad_() for t in (q, k, v)]
    ref = naive_attention(*ref_in)
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=tol)
    if grads:
        do = torch.randn_like(out)
        got = torch.autograd.grad(out, (q, k, v), do)
        want = torch.autograd.grad(ref, ref_in, do.float())
        for name, g, w in zip("qkv", got, want, strict=True):
            assert g.dtype == q.dtype
            torch.testing.assert_close(g.float(), w, atol=tol, rtol=tol, msg=lambda m, n=name: f"d{n}: {m}")


GRID = list(itertools.product((1, 2), (1, 3), (1, 7, 64, 65, 130), (16, 32, 64)))
CI_SUBSET = [(1, 1, 1, 64), (2, 3, 7, 16), (1, 3, 64, 32), (2, 1, 65, 64), (1, 2, 130, 16), (2, 3, 65, 32)]
DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B,H,T,D", CI_SUBSET)
def test_matches_reference(B, H, T, D, dtype):
    check_against_reference(*qkv(B, H, T, T, D, dtype))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("B,H,T,D", GRID)
def test_matches_reference_full_grid(B, H, T, D, dtype):
    check_against_reference(*qkv(B, H, T, T, D, dtype))


@pytest.mark.parametrize("D", [24, 128])
def test_head_dim_padded_to_power_of_two(D):
    check_against_reference(*qkv(1, 2, 40, 40, D))


@pytest.mark.parametrize("Tq,Tk", [(1, 1), (1, 9), (5, 70), (33, 65), (64, 130)])
def test_offset_causal_mask_with_past_keys(Tq, Tk):
    """Decoding with a KV cache: query i sits at key Tk - Tq + i; forward and backward both handle it."""
    check_against_reference(*qkv(2, 2, Tq, Tk, 32))


@pytest.mark.skipif(CUDA, reason="on CUDA autotune picks the tiles; test_half_precision_on_gpu covers them")
@pytest.mark.parametrize("block_m, block_n", [(16, 16), (16, 64), (64, 16), (128, 32), (32, 128), (64, 64)])
def test_every_tile_shape_autotune_may_pick(monkeypatch, block_m, block_n):
    """The interpreter's fixed 32 x 32 tile, replaced by the GPU candidates' shapes (16-128, square and not):
    the causal diagonal then crosses tiles at other offsets, forward and backward, with and without past keys."""
    monkeypatch.setitem(fa._FIXED, "BLOCK_M", block_m)
    monkeypatch.setitem(fa._FIXED, "BLOCK_N", block_n)
    check_against_reference(*qkv(1, 2, 130, 130, 16))
    check_against_reference(*qkv(1, 1, 37, 150, 32))


def test_non_contiguous_inputs():
    """The model hands in transposed views of one [B, T, 3C] projection; strides are honoured."""
    B, T, H, D = 2, 37, 3, 16
    qkv_proj = torch.randn(B, T, 3 * H * D, device=DEVICE, requires_grad=True)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv_proj.split(H * D, dim=2))
    assert not q.is_contiguous()
    check_against_reference(q, k, v)


def test_causality():
    """Changing token j (its query, key and value) never changes the outputs before j."""
    q, k, v = (t.detach() for t in qkv(1, 2, 70, 70, 32))
    base = flash_attention(q, k, v)
    for j in (0, 31, 32, 69):
        q2, k2, v2 = q.clone(), k.clone(), v.clone()
        for t in (q2, k2, v2):
            t[:, :, j] = torch.randn_like(t[:, :, j]) * 5
        out = flash_attention(q2, k2, v2)
        assert torch.equal(out[:, :, :j], base[:, :, :j])
        assert not torch.equal(out[:, :, j:], base[:, :, j:])


def test_log_sum_exp_and_custom_scale():
    q, k, v = (t.detach() for t in qkv(1, 2, 20, 33, 16))
    o, lse = torch.ops.kernels.flash_attn_fwd(q, k, v, 0.3)
    assert lse.dtype == torch.float32 and lse.shape == (1, 2, 20)
    s = (q @ k.transpose(-2, -1)) * 0.3
    mask = torch.arange(33)[None, :] > torch.arange(20)[:, None] + 13
    s = s.masked_fill(mask.to(s.device), float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o, torch.softmax(s, -1) @ v, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flash_attention(q, k, v, scale=0.3), o)
    torch.testing.assert_close(fa.reference_attention(q, k, v, scale=0.3), o, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shapes,dtypes,match", [
    (((1, 1, 4, 16), (1, 1, 3, 16)), (torch.float32,) * 2, "Tq <= Tk"),
    (((1, 1, 4, 16), (1, 1, 4, 16)), (torch.float32, torch.float16), "dtype"),
    (((1, 1, 4, 16), (1, 1, 4, 32)), (torch.float32,) * 2, "expected q"),
    (((1, 1, 4, 512), (1, 1, 4, 512)), (torch.float32,) * 2, "head dim"),
])
def test_rejects_bad_inputs(shapes, dtypes, match):
    q = torch.zeros(shapes[0], dtype=dtypes[0])
    k = torch.zeros(shapes[1], dtype=dtypes[1])
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, k)


def test_kernels_package_is_independent_and_interprets_on_cpu():
    """kernels imports nothing from gpt; on CPU it runs the interpreter even if triton was imported first
    (what torch.compile does before gpt.model.attention's lazy import) - only the kernels' own launches count."""
    for path in (ROOT / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "gpt" or n.startswith("gpt.") for n in names), path
    if CUDA:
        assert not fa.INTERPRETED
        return
    code = ("import triton.language, torch, sys; from kernels.attention import flash_attention, INTERPRETED;"
            "q = torch.randn(1, 1, 5, 16); assert INTERPRETED and flash_attention(q, q, q).isfinite().all();"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'gpt']; print('ok')")
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]


def tiny_gpt(attention: str, n_layer: int = 1) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=17, block_size=16, n_layer=n_layer, n_head=2, n_embd=32, dropout=0.0)
    return GPT(cfg, attention=attention).to(DEVICE)


def test_compiled_training_step_matches_sdpa_without_graph_breaks_or_recompiles():
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model, ref = tiny_gpt("triton"), tiny_gpt("sdpa")
    x, y = torch.randint(0, 17, (2, 16), device=DEVICE), torch.randint(0, 17, (2, 16), device=DEVICE)
    calls = dict(fa.CALLS)
    step = torch.compile(model, fullgraph=True)  # fullgraph: a graph break would raise
    _, loss = step(x, y)
    loss.backward()
    _, ref_loss = ref(x, y)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=0)
    for (name, p), r in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, r.grad, atol=1e-4, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")
    assert fa.CALLS["forward"] > calls.get("forward", 0) and fa.CALLS["backward"] > calls.get("backward", 0)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(2):
            _, loss = step(x, y)
            loss.backward()
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1


def test_twenty_training_steps_match_sdpa():
    losses = {}
    for backend in ("triton", "sdpa"):
        model = tiny_gpt(backend, n_layer=2)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(1)
        losses[backend] = []
        for _ in range(20):
            x, y = (torch.randint(0, 17, (4, 16), generator=gen).to(DEVICE) for _ in range(2))
            _, loss = model(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[backend].append(loss.item())
    assert losses["triton"] == pytest.approx(losses["sdpa"], abs=1e-3)
    assert losses["triton"][-1] < losses["triton"][0]


def test_triton_attention_with_a_kv_cache_matches_recompute_every_step():
    """Decoding through the static KV cache with the Triton kernel (it takes the cache's written prefix) gives
    the logits of recomputing the whole window, at every step and across a re-prefill."""
    import numpy as np

    from gpt.decode.backends.torch_decoder import TorchDecoder
    from gpt.decode.loop import forced_logits

    model = tiny_gpt("triton").eval()
    vocab = [chr(65 + i) for i in range(17)]
    tokens = np.random.default_rng(0).integers(0, 17, 20).tolist()  # block 16: one re-prefill
    calls = fa.CALLS["forward"]
    cached = forced_logits(TorchDecoder(model, vocab), [1, 2, 3], tokens)
    assert fa.CALLS["forward"] > calls
    model.set_attention("sdpa")
    recomputed = forced_logits(TorchDecoder(model, vocab, use_cache=False), [1, 2, 3], tokens)
    for step, (a, b) in enumerate(zip(cached, recomputed, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=f"step {step}")


def test_cli_trains_with_triton_attention(periodic_text_file, tmp_path: Path):
    r = run_module("gpt.train", "--data", str(periodic_text_file), "--out-dir", str(tmp_path), "--attention",
                   "triton", *TINY, "--max_iters", "3", "--eval_interval", "100", "--eval_iters", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "attention triton" in r.stdout
    if not CUDA:
        assert "Triton interpreter" in r.stdout


# ------------------------------------------------------------------------------------------- GPU only
@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("B,H,T,D", [(2, 3, 130, 64), (4, 6, 256, 64), (1, 2, 1000, 32), (2, 2, 77, 128)])
def test_half_precision_on_gpu(B, H, T, D, dtype):
    check_against_reference(*qkv(B, H, T, T, D, dtype))


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("B,H,Tq,Tk,D", [(2, 3, 130, 130, 64), (2, 2, 1, 300, 32), (1, 2, 200, 513, 64)])
def test_fp32_on_gpu_is_exact_not_tf32(B, H, Tq, Tk, D):
    """fp32 inputs use ieee dots; TF32 would miss the 1e-4 tolerance at these sizes."""
    check_against_reference(*qkv(B, H, Tq, Tk, D))


@pytest.mark.cuda
@needs_cuda
def test_compiled_bf16_autocast_step_on_gpu():
    model, ref = tiny_gpt("triton", n_layer=2), tiny_gpt("sdpa", n_layer=2)
    x, y = torch.randint(0, 17, (8, 16), device=DEVICE), torch.randint(0, 17, (8, 16), device=DEVICE)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        _, loss = torch.compile(model, fullgraph=True)(x, y)
        _, ref_loss = ref(x, y)
    loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=2e-2, rtol=0)

