"""A checkpoint is `model.safetensors` (weights, no pickle) + `config.json` (model config, vocabulary,
val loss, iteration and the weights' sha256). `config.json` is the manifest: loading refuses weights
whose hash it does not vouch for.

Saving is all or nothing. A crash (kill -9, power loss) at any instant leaves a loadable checkpoint,
the previous one or the new one, never a mix:

  1. the new weights are written atomically to `model.safetensors.next` (`model.safetensors` untouched);
  2. the new `config.json` is written atomically: this rename is the commit point;
  3. `model.safetensors.next` is renamed over `model.safetensors`.

Before 2 the old manifest vouches for the untouched old weights; after 2 the new manifest vouches for the
new weights, which are in `model.safetensors.next` until 3 and in `model.safetensors` after it. The loader
reads `model.safetensors` and, only when its hash is not the manifest's, `model.safetensors.next`. The
next save (or `recover`) first finishes an interrupted step 3, so step 1 never overwrites committed
weights.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from gpt.config import ModelConfig
from gpt.errors import GPTError
from gpt.fsutil import atomic_write_bytes, atomic_write_text, ensure_dir, fault_point, remove_stale_temps, replace
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer

FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
STAGED = WEIGHTS + ".next"
CONFIG = "config.json"
TIED = "lm_head.weight"  # shares storage with wte.weight; safetensors stores it once
TRAIN_HINT = "train one with `python -m gpt.train --out-dir DIR`"


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def recover(ckpt_dir: Path) -> None:
    """Finish a save that was killed after its commit point, and delete temp files of killed writes."""
    ckpt_dir = Path(ckpt_dir)
    staged, config = ckpt_dir / STAGED, ckpt_dir / CONFIG
    if staged.is_file() and config.is_file():
        try:
            want = json.loads(config.read_text(encoding="utf-8")).get("weights_sha256")
        except (OSError, ValueError, AttributeError):
            want = None
        if want and sha256(staged.read_bytes()) == want:
            replace(staged, ckpt_dir / WEIGHTS)  # committed: finish step 3
        else:
            staged.unlink()  # never committed: the old pair is intact
    remove_stale_temps(ckpt_dir, (WEIGHTS, STAGED, CONFIG))


def save_checkpoint(out_dir: Path, model: GPT, tokenizer: CharTokenizer, **info) -> None:
    out_dir = ensure_dir(out_dir)
    recover(out_dir)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != TIED}
    blob = save_safetensors(tensors)
    atomic_write_bytes(out_dir / STAGED, blob, fault="before-weights")
    fault_point("after-weights")
    manifest = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "vocab": tokenizer.to_json(),
        "weights_sha256": sha256(blob),
        **info,
    }
    atomic_write_text(out_dir / CONFIG, json.dumps(manifest, indent=2))  # the commit point
    fault_point("after-manifest")
    replace(out_dir / STAGED, out_dir / WEIGHTS)


def read_manifest(ckpt_dir: Path) -> dict:
    """The checkpoint's config.json, checked field by field (every problem is a one-line `GPTError`)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.exists():
        raise GPTError(f"checkpoint directory {ckpt_dir} does not exist; {TRAIN_HINT}")
    if not ckpt_dir.is_dir():
        hint = " (an .onnx file needs --backend onnxruntime)" if ckpt_dir.suffix == ".onnx" else ""
        raise GPTError(f"{ckpt_dir} is a file, not a checkpoint directory{hint}")
    path = ckpt_dir / CONFIG
    if not path.is_file():
        raise GPTError(f"{path} is missing: {ckpt_dir} is not a complete checkpoint; {TRAIN_HINT}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GPTError(f"{path} is not valid JSON ({e}); the checkpoint is damaged, {TRAIN_HINT}") from None
    if not isinstance(manifest, dict):
        raise GPTError(f"{path} is not a checkpoint manifest (a JSON object); {TRAIN_HINT}")
    missing = [k for k in ("model", "vocab", "weights_sha256") if k not in manifest]
    if missing:
        raise GPTError(f"{path} is missing field(s): {', '.join(missing)}")
    version = manifest.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise GPTError(f"{path} has format_version {version!r}; this version reads {FORMAT_VERSION}: "
                       f"use the gpt version that wrote it, or {TRAIN_HINT}")
    if not isinstance(manifest["model"], dict):
        raise GPTError(f"{path}: field 'model' must be an object of model settings")
    vocab = manifest["vocab"]
    if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
        raise GPTError(f"{path}: field 'vocab' must be a list of characters")
    return manifest


def model_config(manifest: dict, path: Path) -> ModelConfig:
    d = manifest["model"]
    kinds = {"vocab_size": int, "block_size": int, "n_layer": int, "n_head": int, "n_embd": int,
             "dropout": (int, float), "bias": bool}
    for name, kind in kinds.items():
        value = d.get(name)
        if name in d and (not isinstance(value, kind) or isinstance(value, bool) and kind is not bool
                          or isinstance(value, float) and not math.isfinite(value)):
            raise GPTError(f"{path}: model field {name!r} has the wrong type or value: {value!r}")
    try:
        return ModelConfig.from_dict(d)
    except GPTError as e:
        raise GPTError(f"{path}: {e}") from None


def read_weights(ckpt_dir: Path, manifest: dict) -> bytes:
    """The weights the manifest vouches for: `model.safetensors`, or a committed `model.safetensors.next`."""
    path = ckpt_dir / WEIGHTS
    blob = path.read_bytes() if path.is_file() else None
    if blob is not None and sha256(blob) == manifest["weights_sha256"]:
        return blob
    staged = ckpt_dir / STAGED  # a save killed between its commit and its last rename
    if staged.is_file():
        staged_blob = staged.read_bytes()
        if sha256(staged_blob) == manifest["weights_sha256"]:
            return staged_blob
    if blob is None:
        raise GPTError(f"{path} is missing; {TRAIN_HINT}")
    if not blob:
        raise GPTError(f"{path} is empty; restore it or {TRAIN_HINT}")
    raise GPTError(f"{path} does not match the sha256 in {CONFIG}: the file is corrupt or truncated; "
                   f"restore it or {TRAIN_HINT}")


def manifest_changed(ckpt_dir: Path, manifest: dict) -> bool:
    try:
        return json.loads((ckpt_dir / CONFIG).read_bytes()) != manifest
    except (OSError, ValueError):
        return False


def load_checkpoint(ckpt_dir: Path, device: str | torch.device = "cpu",
                    attention: str = "sdpa") -> tuple[GPT, CharTokenizer, dict]:
    """Model (eval mode), tokenizer and manifest; every way the files can be wrong is a `GPTError`."""
    ckpt_dir = Path(ckpt_dir)
    for attempt in range(3):  # a training run may be saving into this directory right now: read again
        manifest = read_manifest(ckpt_dir)
        try:
            blob = read_weights(ckpt_dir, manifest)
            break
        except GPTError:
            if attempt == 2 or not manifest_changed(ckpt_dir, manifest):
                raise
    config = model_config(manifest, ckpt_dir / CONFIG)
    tokenizer = CharTokenizer(manifest["vocab"])
    if tokenizer.vocab_size != config.vocab_size:
        raise GPTError(f"{ckpt_dir / CONFIG}: vocab has {tokenizer.vocab_size} characters, "
                       f"vocab_size says {config.vocab_size}")
    path = ckpt_dir / WEIGHTS
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
            f"{ckpt_dir}: weights disagree with {CONFIG} at {k}: file has {tuple(got[k]) if k in got else 'nothing'}, "
            f"config expects {tuple(expected[k]) if k in expected else 'nothing'} (files of different checkpoints?)"
        )
    model.load_state_dict(tensors, strict=False)
    return model.to(device).eval(), tokenizer, manifest
