"""nanoGPT in: a checkpoint in nanoGPT's own format (tests/nanogpt_reference.py, trained a little so its greedy
choices are decisive) converted by `gpt.convert nanogpt`, then our model, its ONNX export and the onnxruntime
sampler compute what nanoGPT's model does. Two variants: nanoGPT's defaults (bias=False, flash attention,
torch.compile's `_orig_mod.` prefix, vocabulary padded above meta.pkl's) and GPT-2's layout (bias=True, the
non-flash path's causal-mask buffers in the state dict)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import PERIODIC_TEXT, run_module
from nanogpt_reference import GPT, GPTConfig, prepare_meta, train, write_files

from gpt.convert import main as convert
from gpt.model.checkpoint import load_checkpoint, model_config

VARIANTS = {"nanogpt-defaults": dict(bias=False, flash=True, compiled=True, pad=7),
            "gpt2-layout": dict(bias=True, flash=False, compiled=False, pad=0)}
PROMPT = "ROMEO:"


@pytest.fixture(scope="session", params=list(VARIANTS))
def nanogpt(request, tmp_path_factory):
    """(reference model, meta, converted checkpoint dir, variant) for each variant."""
    v = VARIANTS[request.param]
    meta = prepare_meta(PERIODIC_TEXT)
    torch.manual_seed(0)
    ref = GPT(GPTConfig(vocab_size=meta["vocab_size"] + v["pad"], bias=v["bias"]), flash=v["flash"])
    train(ref, torch.tensor([meta["stoi"][c] for c in PERIODIC_TEXT]), steps=150)
    src = tmp_path_factory.mktemp(f"nanogpt-{request.param}")
    write_files(src, ref, meta, compiled=v["compiled"])
    out = src / "converted"
    assert convert(["nanogpt", str(src / "ckpt.pt"), "--meta", str(src / "meta.pkl"), "--out", str(out)]) == 0
    return ref, meta, out, v


def reference_text(ref: GPT, meta: dict, n: int) -> str:
    ids = torch.tensor([[meta["stoi"][c] for c in PROMPT]])
    out = ref.generate_greedy(ids, n, vocab=meta["vocab_size"])
    return "".join(meta["itos"][i] for i in out[0].tolist())


def test_converted_logits_equal_nanogpts(nanogpt):
    ref, meta, out, v = nanogpt
    model, tokenizer, manifest = load_checkpoint(out)
    assert model.config.bias is v["bias"] and tokenizer.itos == [meta["itos"][i] for i in range(meta["vocab_size"])]
    ids = torch.randint(0, meta["vocab_size"], (3, ref.config.block_size), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = model(ids)
        theirs, _ = ref(ids, ids)
    diff = (ours - theirs[..., :meta["vocab_size"]]).abs().max().item()
    print(f"nanoGPT {v}: max |logits ours - nanoGPT| = {diff:.2e}")
    assert diff <= 1e-5
    assert manifest["iter"] == 250 and manifest["val_loss"] == pytest.approx(1.2345)
    assert manifest["converted_from"]["vocab_size"] == meta["vocab_size"] + v["pad"]
    assert manifest["converted_from"]["train_config"]["dataset"] == "shakespeare_char"


def test_export_and_onnxruntime_sampling_give_nanogpts_greedy_text(nanogpt, tmp_path):
    """convert -> export.onnx (both layouts for nanoGPT's bias-free default) -> gpt.sample --backend onnxruntime,
    and the torch sampler: nanoGPT's greedy text, to block_size."""
    ref, meta, out, v = nanogpt
    n = ref.config.block_size - len(PROMPT)
    want = reference_text(ref, meta, n) + "\n"
    args = ["--prompt", PROMPT, "--max-new-tokens", str(n), "--temperature", "0"]
    torch_text = run_module("gpt.sample", "--ckpt", str(out), *args)
    assert torch_text.returncode == 0, torch_text.stderr
    assert torch_text.stdout == want
    for layout in ("gqa", "onnx") if not v["bias"] else ("gqa",):
        onnx = tmp_path / f"{layout}.onnx"
        r = run_module("export.onnx", "--ckpt", str(out), "--out", str(onnx), "--attention", layout, "--threads", "1")
        assert r.returncode == 0, r.stderr
        print(r.stdout.splitlines()[-1])  # the parity line
        sampled = run_module("gpt.sample", "--backend", "onnxruntime", "--onnx", str(onnx), *args)
        assert sampled.returncode == 0, sampled.stderr
        assert sampled.stdout == want, layout
    assert "wherefore art thou?" in want


def test_a_config_json_without_bias_loads_as_bias_true(tiny_ckpt):
    """config.json files written before the `bias` field existed had biases."""
    manifest = json.loads((tiny_ckpt / "config.json").read_text())
    del manifest["model"]["bias"]
    assert model_config(manifest, tiny_ckpt / "config.json").bias is True
