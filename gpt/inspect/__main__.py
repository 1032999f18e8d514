"""See inside a trained model: `python -m gpt.inspect --ckpt out --prompt "O God, O God!"`.

Writes into --out: attention.png (every layer x head), embedding.png (the characters' embedding map, PCA),
logit_lens.png and true_next.png (predictions read out after each block), residual_norms.png (the residual
stream before and after each LayerNorm), and index.html, which shows them with a sentence each and opens from
disk. --json adds inspect.json with the numbers.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.tokenizer import CharTokenizer, UnknownCharacterError


def index_list(text: str) -> list[int]:
    """'0,2,3' -> [0, 2, 3] (range checks need the model, so they come later)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0,2, got {text!r}") from None
    return list(dict.fromkeys(values))


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.inspect", description=__doc__)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--prompt", default="O God, O God!",
                   help="the text to look at, at most block_size characters (default: O God, O God!)")
    p.add_argument("--out", type=Path, default=Path("inspect"), help="report directory (default: inspect)")
    p.add_argument("--layers", type=index_list, help="attention maps of these layers only, e.g. 0,3 (default: all)")
    p.add_argument("--heads", type=index_list, help="attention maps of these heads only, e.g. 1 (default: all)")
    p.add_argument("--top-k", type=int, default=5, help="characters listed per prediction (default: 5)")
    p.add_argument("--compare-init", action="store_true",
                   help="draw an untrained model's embedding map beside the trained one")
    p.add_argument("--json", action="store_true", help="also write the numbers to OUT/inspect.json")
    return p


def check_indices(flag: str, chosen: list[int] | None, count: int, what: str) -> list[int]:
    if chosen is None:
        return list(range(count))
    for i in chosen:
        if not 0 <= i < count:
            raise GPTError(f"{flag}: {what} {i} does not exist; the model has {count} {what}s (0-{count - 1})")
    return chosen


def check_prompt(tokenizer: CharTokenizer, prompt: str, block_size: int) -> None:
    if not prompt:
        raise GPTError("--prompt is empty; give the text to look at")
    try:
        tokenizer.encode(prompt)
    except UnknownCharacterError as e:
        raise GPTError(f"the prompt has {e}; the vocabulary is the {tokenizer.vocab_size} characters "
                       "of the training text") from None
    if len(prompt) > block_size:
        raise GPTError(f"the prompt has {len(prompt)} characters, more than this model's block_size "
                       f"{block_size}; shorten it")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise GPTError(f"--top-k must be >= 1, got {args.top_k}")
    start = time.perf_counter()
    from gpt.fsutil import ensure_dir
    from gpt.inspect.report import analyse, write_report
    from gpt.model.checkpoint import load_checkpoint

    model, tokenizer, _ = load_checkpoint(args.ckpt)
    config = model.config
    check_prompt(tokenizer, args.prompt, config.block_size)
    layers = check_indices("--layers", args.layers, config.n_layer, "layer")
    heads = check_indices("--heads", args.heads, config.n_head, "head")
    out = ensure_dir(args.out, "report directory", "--out")
    findings = analyse(model, tokenizer, args.prompt, layers, heads, args.compare_init, args.top_k)
    written = write_report(findings, out, str(args.ckpt), args.json)
    print("\n".join(str(p) for p in written))
    print(f"open {out / 'index.html'} in a browser ({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
