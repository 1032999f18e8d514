"""Hugging Face out: `export.hf` writes a directory that transformers and optimum load with no code of ours, and
they compute what we do: logits to 1e-4 (with biases, and zero biases for a bias=False model), the tokenizer's
ids, and the greedy text of `gpt.sample --temperature 0` (transformers' generate and optimum's ONNX Runtime)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import run_module
from safetensors import safe_open

from gpt.config import ModelConfig
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint, save_checkpoint
from gpt.tokenizer import CharTokenizer

os.environ["HF_HUB_OFFLINE"] = "1"  # everything is local: never reach for the Hub
transformers = pytest.importorskip("transformers", reason="the [hf] extra is not installed")
PROMPT = "ROMEO:"
FILES = {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "README.md"}


@pytest.fixture(scope="module")
def hf_dir(tiny_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("hf") / "tiny-gpt"
    r = run_module("export.hf", "--ckpt", str(tiny_ckpt), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def greedy_text(tiny_ckpt) -> str:
    """`gpt.sample --temperature 0` to block_size (GPT-2 has no positions past it)."""
    r = run_module("gpt.sample", "--ckpt", str(tiny_ckpt), "--prompt", PROMPT,
                   "--max-new-tokens", str(32 - len(PROMPT)), "--temperature", "0")
    assert r.returncode == 0, r.stderr
    return r.stdout.removesuffix("\n")


@pytest.fixture(scope="module")
def bias_free_ckpt(tmp_path_factory, tiny_ckpt):
    """A bias=False model (random weights) in our checkpoint format, with the tiny model's vocabulary."""
    _, tokenizer, _ = load_checkpoint(tiny_ckpt)
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32,
                            dropout=0.0, bias=False))
    out = tmp_path_factory.mktemp("bias-free")
    save_checkpoint(out, model, tokenizer, iter=0)
    return out


def logits_diff(ckpt, hf) -> float:
    """Max |ours - transformers'| over every position of a full window; theirs with its own (eager) attention."""
    model, tokenizer, _ = load_checkpoint(ckpt)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf, attn_implementation="eager").eval()
    assert type(theirs).__name__ == "GPT2LMHeadModel"
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, tokenizer.vocab_size, (2, model.config.block_size), generator=g)
    with torch.no_grad():
        return (model(ids)[0] - theirs(input_ids=ids).logits).abs().max().item()


def test_transformers_computes_our_logits(tiny_ckpt, hf_dir):
    diff = logits_diff(tiny_ckpt, hf_dir)
    print(f"max |logits transformers - ours| = {diff:.2e}")
    assert diff <= 1e-4


def test_a_bias_free_model_gets_zero_biases_and_the_same_logits(bias_free_ckpt, tmp_path):
    from export.hf import main

    assert main(["--ckpt", str(bias_free_ckpt), "--out", str(tmp_path / "hf")]) == 0
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert not f.get_tensor("transformer.h.0.mlp.c_fc.bias").any()
        assert not f.get_tensor("transformer.ln_f.bias").any()
    diff = logits_diff(bias_free_ckpt, tmp_path / "hf")
    print(f"bias=False: max |logits transformers - ours| = {diff:.2e}")
    assert diff <= 1e-4


def test_the_directory_is_what_push_to_hub_uploads(hf_dir, tiny_ckpt):
    assert {p.name for p in hf_dir.iterdir()} == FILES
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["activation_function"] == "gelu" and config["n_positions"] == 32
    with safe_open(hf_dir / "model.safetensors", "pt") as f:
        assert f.get_slice("transformer.h.0.attn.c_attn.weight").get_shape() == [32, 96]  # Conv1D: [in, out]
        assert "lm_head.weight" not in f.keys()  # tied, stored once
    manifest = json.loads((tiny_ckpt / "config.json").read_text())
    card = (hf_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert f"Validation loss **{manifest['val_loss']:.4f}**" in card and "optimizer muon" in card


def test_the_tokenizer_has_our_ids_one_per_character(hf_dir, tiny_ckpt):
    _, ours, _ = load_checkpoint(tiny_ckpt)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    text = "ROMEO: wherefore  art thou?\n\nthe lazy dog; "
    enc = tok(text)
    assert enc["input_ids"] == ours.encode(text) and set(enc) == {"input_ids", "attention_mask"}
    assert tok.decode(enc["input_ids"]) == text
    with pytest.raises(Exception, match="UNK"):
        tok("ROMEO#")


def test_transformers_generate_writes_our_greedy_text(hf_dir, greedy_text):
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir)
    inputs = tok(PROMPT, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=32 - len(PROMPT), do_sample=False)
    assert tok.decode(out[0]) == greedy_text
    assert "wherefore art thou?" in greedy_text


def test_optimum_onnxruntime_writes_our_greedy_text(hf_dir, greedy_text):
    """optimum exports the directory to ONNX itself and generates with ONNX Runtime: the same greedy text."""
    optimum_ort = pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx is not installed")
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    model = optimum_ort.ORTModelForCausalLM.from_pretrained(hf_dir, export=True)
    out = model.generate(**tok(PROMPT, return_tensors="pt"), max_new_tokens=32 - len(PROMPT), do_sample=False)
    assert tok.decode(out[0]) == greedy_text


def test_a_character_outside_the_vocabulary_is_not_silently_dropped():
    """The fast tokenizer's WordLevel model has no [UNK] in a character vocabulary: it fails, as we do."""
    from export.hf_tokenizer import char_tokenizer

    tok = char_tokenizer(CharTokenizer.from_text("abc\n").itos)
    assert tok.encode("ab\nc").ids == [1, 2, 0, 3]
    with pytest.raises(Exception, match="UNK"):
        tok.encode("abd")
