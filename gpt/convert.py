"""Bring a checkpoint of another trainer in as ours (`model.safetensors` + `config.json`), so that every command
of this package (sampling, export, inspect, the web page) works on it.

    python -m gpt.convert nanogpt PATH/ckpt.pt --meta data/shakespeare_char/meta.pkl --out DIR

nanogpt   nanoGPT's character-level checkpoint (`ckpt.pt`, read with torch.load(weights_only=True)) and its
          dataset's `meta.pkl` (read by an unpickler that admits only dicts, lists, strings and ints): the same
          architecture, so the weights carry over unchanged (see gpt/model/nanogpt.py).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from gpt.errors import ArgumentParser, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.convert", description=__doc__)
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    nano = formats.add_parser("nanogpt", help="nanoGPT's ckpt.pt + meta.pkl (character-level)")
    nano.add_argument("ckpt", type=Path, help="nanoGPT's checkpoint, e.g. out-shakespeare-char/ckpt.pt")
    nano.add_argument("--meta", type=Path, help="the dataset's meta.pkl, e.g. data/shakespeare_char/meta.pkl")
    nano.add_argument("--out", type=Path, required=True, help="checkpoint directory to write (new or empty)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from gpt.fsutil import check_new_dir
    from gpt.model import GPT
    from gpt.model.checkpoint import save_checkpoint
    from gpt.model.nanogpt import load_nanogpt

    check_new_dir(args.out)
    ckpt = load_nanogpt(args.ckpt, args.meta)
    model = GPT(ckpt.config)
    model.load_state_dict(ckpt.tensors, strict=False)  # the names were checked; lm_head is tied to wte
    save_checkpoint(args.out, model.eval(), ckpt.tokenizer, **ckpt.info)
    c = ckpt.config
    print(f"converted {args.ckpt} ({c.n_layer} layers x {c.n_head} heads x {c.n_embd}, block {c.block_size}, "
          f"{c.vocab_size} characters, bias {c.bias}) to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
