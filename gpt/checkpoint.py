"""A checkpoint is `model.safetensors` (weights, no pickle) + `config.json` (model config, vocabulary,
val loss, iteration and the weights' sha256). `config.json` is written last: it is the manifest, and
loading refuses weights whose hash it does not vouch for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from gpt.config import ModelConfig
from gpt.errors import GPTError
from gpt.fsutil import atomic_write_bytes, atomic_write_text, ensure_dir
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TIED = "lm_head.weight"  # shares storage with wte.weight; safetensors stores it once


def save_checkpoint(out_dir: Path, model: GPT, tokenizer: CharTokenizer, **info) -> None:
    out_dir = ensure_dir(out_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != TIED}
    blob = save_safetensors(tensors)
    atomic_write_bytes(out_dir / WEIGHTS, blob)
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "vocab": tokenizer.to_json(),
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        **info,
    }
    atomic_write_text(out_dir / CONFIG, json.dumps(manifest, indent=2))


def read_manifest(ckpt_dir: Path) -> dict:
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        raise GPTError(f"checkpoint directory {ckpt_dir} does not exist; train one with `python -m gpt.train`")
    path = ckpt_dir / CONFIG
    if not path.is_file():
        raise GPTError(f"{path} is missing; {ckpt_dir} is not a complete checkpoint")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GPTError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in ("model", "vocab", "weights_sha256") if k not in manifest]
    if missing:
        raise GPTError(f"{path} is missing field(s): {', '.join(missing)}")
    return manifest


def load_checkpoint(ckpt_dir: Path, device: str | torch.device = "cpu",
                    attention: str = "sdpa") -> tuple[GPT, CharTokenizer, dict]:
    """Model (eval mode), tokenizer and manifest; every way the files can be wrong is a `GPTError`."""
    ckpt_dir = Path(ckpt_dir)
    manifest = read_manifest(ckpt_dir)
    config = ModelConfig.from_dict(manifest["model"])
    tokenizer = CharTokenizer(manifest["vocab"])
    if tokenizer.vocab_size != config.vocab_size:
        raise GPTError(f"{CONFIG}: vocab has {tokenizer.vocab_size} characters, vocab_size says {config.vocab_size}")
    path = ckpt_dir / WEIGHTS
    if not path.is_file():
        raise GPTError(f"{path} is missing")
    blob = path.read_bytes()
    if not blob:
        raise GPTError(f"{path} is empty")
    if hashlib.sha256(blob).hexdigest() != manifest["weights_sha256"]:
        raise GPTError(f"{path} does not match the sha256 in {CONFIG}: the file is corrupt or truncated")
    try:
        tensors = load_safetensors(blob)
    except (SafetensorError, ValueError) as e:
        raise GPTError(f"{path} is not a valid safetensors file: {e}") from None
    model = GPT(config, attention=attention)
    expected = {k: v.shape for k, v in model.state_dict().items() if k != TIED}
    got = {k: v.shape for k, v in tensors.items()}
    if expected != got:
        diff = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        k = diff[0]
        raise GPTError(
            f"weights disagree with config.json at {k}: file has {tuple(got[k]) if k in got else 'nothing'}, "
            f"config expects {tuple(expected[k]) if k in expected else 'nothing'}"
        )
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval(), tokenizer, manifest
