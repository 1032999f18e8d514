"""Read a nanoGPT character-level checkpoint: its `ckpt.pt` and the data folder's `meta.pkl`, as nanoGPT writes them.

`ckpt.pt` (train.py): a dict with `model` (the state dict; keys `transformer.wte.weight`, `transformer.h.0.attn.
c_attn.weight`, ..., `lm_head.weight` tied to `transformer.wte.weight`; prefixed `_orig_mod.` when trained with
torch.compile; `h.N.attn.bias` causal-mask buffers where torch had no flash attention), `model_args` (n_layer,
n_head, n_embd, block_size, bias, vocab_size, dropout), `iter_num`, `best_val_loss` (nanoGPT's estimate over
eval_iters batches) and `config` (train.py's settings). `meta.pkl` (data/shakespeare_char/prepare.py): a dict
with `vocab_size`, `itos` ({id: char}) and `stoi`. Our module names are nanoGPT's without `transformer.`, so the
weights map one to one; the vocabulary may be padded above meta.pkl's size, and the padded rows are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt.config import ModelConfig
from gpt.errors import GPTError
from gpt.model.safe_pickle import load_plain
from gpt.tokenizer import CharTokenizer

COMPILED_PREFIX = "_orig_mod."
ARGS = {"n_layer": int, "n_head": int, "n_embd": int, "block_size": int, "vocab_size": int, "bias": bool,
        "dropout": (int, float)}
GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary (nanoGPT pads it to 50304)


@dataclass
class NanoGPTCheckpoint:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]  # our state-dict names, lm_head (tied) left out
    tokenizer: CharTokenizer
    info: dict  # for our manifest: iteration, val loss, where it came from


def read_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        where = "does not exist" if not path.exists() else "is not a file"
        raise GPTError(f"{path} {where}; give nanoGPT's checkpoint file (its out_dir/ckpt.pt)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code runs
    except Exception as e:  # truncated, not a torch file, or one that names code: torch raises many kinds
        reason = " ".join(str(e).split())[:160]
        raise GPTError(f"{path} cannot be read ({type(e).__name__}: {reason}); is it nanoGPT's ckpt.pt?") from None
    if not isinstance(ckpt, dict) or not {"model", "model_args"} <= ckpt.keys():
        keys = ", ".join(sorted(map(str, ckpt))[:8]) if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = " (this package's train_state.pt needs no conversion)" if isinstance(ckpt, dict) and \
            "model_config" in ckpt else ""
        raise GPTError(f"{path} is not a nanoGPT checkpoint: it has no 'model' and 'model_args' (found: {keys})"
                       f"{hint}")
    return ckpt


def model_args(ckpt: dict, path: Path) -> dict:
    args = ckpt["model_args"]
    if not isinstance(args, dict):
        raise GPTError(f"{path}: 'model_args' must be a dict, got {type(args).__name__}")
    for name, kind in ARGS.items():
        value = args.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise GPTError(f"{path}: model_args[{name!r}] is {value!r}; a nanoGPT checkpoint has a "
                           f"{'bool' if kind is bool else 'number'} there")
    return args


def read_vocab(meta_path: Path) -> list[str]:
    """meta.pkl's `itos` as a list of characters, id order."""
    meta = load_plain(meta_path)
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or sorted(itos) != list(range(len(itos))):
        raise GPTError(f"{meta_path} has no 'itos' mapping ids 0..N-1 to characters: is it nanoGPT's meta.pkl?")
    chars = [itos[i] for i in range(len(itos))]
    if any(not isinstance(c, str) or len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
        raise GPTError(f"{meta_path}: 'itos' must map each id to its own single character (this package is "
                       "character-level)")
    if meta.get("vocab_size", len(chars)) != len(chars):
        raise GPTError(f"{meta_path}: vocab_size {meta['vocab_size']!r} but 'itos' has {len(chars)} characters")
    return chars


def our_tensors(state: dict, vocab: int, padded: int, path: Path) -> dict[str, torch.Tensor]:
    """nanoGPT's state dict under our names: prefixes off, mask buffers and the tied head out, padded rows dropped."""
    if not isinstance(state, dict):
        raise GPTError(f"{path}: 'model' must be a state dict, got {type(state).__name__}")
    tensors = {}
    for key, value in state.items():
        name = str(key).removeprefix(COMPILED_PREFIX).removeprefix("transformer.")
        if name.endswith(".attn.bias") and getattr(value, "dim", lambda: 0)() == 4:
            continue  # the causal mask nanoGPT registers without flash attention: a buffer, not a weight
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise GPTError(f"{path}: 'model' entry {key!r} is not a floating-point tensor")
        tensors[name] = value.float()
    head = tensors.pop("lm_head.weight", None)
    wte = tensors.get("wte.weight")
    if wte is None or wte.dim() != 2 or wte.size(0) != padded:
        raise GPTError(f"{path}: 'model' has no transformer.wte.weight of vocab_size {padded} rows: not a nanoGPT GPT")
    if head is not None and not torch.equal(head, wte):
        raise GPTError(f"{path}: lm_head.weight differs from transformer.wte.weight; this package ties them, "
                       "as nanoGPT does")
    tensors["wte.weight"] = wte[:vocab].clone()
    return tensors


def check_names(tensors: dict[str, torch.Tensor], config: ModelConfig, path: Path) -> None:
    from gpt.model import GPT

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items() if k != "lm_head.weight"}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != expected:
        k = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))[0]
        raise GPTError(f"{path}: weight {k} is {got.get(k, 'missing')}, a nanoGPT GPT with these model_args has "
                       f"{expected.get(k, 'no such weight')} (a modified model.py?)")


def best_val_loss(ckpt: dict) -> float | None:
    value = ckpt.get("best_val_loss")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value < 1e9
    return float(value) if ok else None  # 1e9 is train.py's "never evaluated"


def load_nanogpt(ckpt_path: Path, meta_path: Path | None) -> NanoGPTCheckpoint:
    ckpt_path = Path(ckpt_path)
    ckpt = read_checkpoint(ckpt_path)
    args = model_args(ckpt, ckpt_path)
    if meta_path is None:
        if args["vocab_size"] >= GPT2_VOCAB:
            raise GPTError(f"{ckpt_path} is a GPT-2 BPE model (vocab_size {args['vocab_size']}, no meta.pkl); "
                           "this package is character-level: convert a char model such as shakespeare_char")
        raise GPTError(f"{ckpt_path} needs its vocabulary: add --meta data/DATASET/meta.pkl (written by the "
                       "dataset's prepare.py)")
    chars = read_vocab(meta_path)
    if len(chars) > args["vocab_size"]:
        raise GPTError(f"{meta_path} has {len(chars)} characters but {ckpt_path} was trained on a vocabulary of "
                       f"{args['vocab_size']}: they come from different datasets")
    config = ModelConfig(vocab_size=len(chars), block_size=args["block_size"], n_layer=args["n_layer"],
                         n_head=args["n_head"], n_embd=args["n_embd"], dropout=float(args["dropout"]),
                         bias=args["bias"])
    tensors = our_tensors(ckpt["model"], len(chars), args["vocab_size"], ckpt_path)
    check_names(tensors, config, ckpt_path)
    train = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    info: dict = {"iter": ckpt["iter_num"]} if isinstance(ckpt.get("iter_num"), int) else {}
    loss = best_val_loss(ckpt)
    if loss is not None:
        info |= {"val_loss": loss, "val_loss_kind": "estimate"}
    info["converted_from"] = {
        "format": "nanoGPT", "checkpoint": ckpt_path.name, "vocab_size": args["vocab_size"],
        "train_config": {k: v for k, v in train.items() if isinstance(v, str | int | float | bool)},
    }
    return NanoGPTCheckpoint(config, tensors, CharTokenizer(chars), info)
