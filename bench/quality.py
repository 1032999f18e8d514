"""How good is a trained model, in two numbers: `python -m bench.quality --ckpt out`.

1. Its val loss: the float32 full pass gpt.train recorded in config.json.
2. Word coverage: sample text at temperature 0.8 and count the share of its words (letters and inner
   apostrophes, lower-cased) that occur somewhere in the training text. A model that has learnt English
   spelling from characters writes mostly real words; one that has not invents them ("thoue", "grath").
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.harness.cli import add_options
from gpt.errors import ArgumentParser, GPTError, run_cli

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def word_coverage(sample: str, corpus: str) -> tuple[float, int]:
    """(share of the sample's words found in the corpus, number of sample words)."""
    known = set(words(corpus))
    found = words(sample)
    if not found:
        raise GPTError("the sample holds no words to check")
    return sum(w in known for w in found) / len(found), len(found)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m bench.quality", description=__doc__)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--data", type=Path, help="the training text (default: Tiny Shakespeare from --data-dir)")
    add_options(p, data_dir=True)
    p.add_argument("--chars", type=int, default=3000, help="characters to sample (default 3000)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    if args.chars < 1:
        raise GPTError(f"--chars must be >= 1, got {args.chars}")
    from gpt.api import TextGenerator
    from gpt.data import load_shakespeare, load_text
    from gpt.decode.backends import open_decoder
    from gpt.model.checkpoint import read_manifest

    corpus = load_text(args.data) if args.data else load_shakespeare(args.data_dir)
    manifest = read_manifest(args.ckpt)
    text = TextGenerator(open_decoder("torch", args.ckpt)).generate("\n", args.chars, args.temperature,
                                                                     seed=args.seed)[0]
    share, n = word_coverage(text, corpus)
    if "val_loss" in manifest:
        print(f"val loss {manifest['val_loss']:.4f} ({manifest.get('val_loss_kind', 'estimate')}, iteration "
              f"{manifest.get('iter')})")
    print(f"words: {share:.1%} of {n} sampled words (temperature {args.temperature}, {args.chars} characters) "
          "occur in the training text")
    return 0


if __name__ == "__main__":
    run_cli(main)
