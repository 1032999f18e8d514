"""Generate text: `python -m gpt.sample --ckpt out --prompt "ROMEO:"`.

`--backend torch` samples from a checkpoint directory; `--backend onnxruntime` from an exported .onnx
file and never imports torch. Both share one generation loop and one numpy sampler, so with the same
seed they print the same text.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gpt.data import DEFAULT_DATA_DIR
from gpt.decode.backends import BACKENDS, open_decoder
from gpt.decode.loop import check_max_new_tokens, check_num_samples, generate, prepare_prompt
from gpt.decode.sampler import Sampler, SamplingParams
from gpt.decode.speculative.drafters import SPECULATIVE_HELP, SPECULATIVE_METAVAR, check_speculative, open_drafter
from gpt.decode.speculative.loop import DEFAULT_DRAFT_TOKENS, SpeculativeStats, generate_speculative
from gpt.errors import ArgumentParser, GPTError, add_threads, flag_names, run_cli
from gpt.tokenizer import CharTokenizer


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.sample", description=__doc__)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--backend", choices=BACKENDS, default="torch", help="decoder (default: torch)")
    p.add_argument("--onnx", type=Path, help="ONNX file for --backend onnxruntime (default: CKPT/model.onnx)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--num-samples", type=int, default=1, help="samples, decoded together as one batch")
    p.add_argument("--no-cache", action="store_true", help="torch: recompute the whole window every step")
    p.add_argument("--compile", action="store_true", help="torch: run the decoder under torch.compile")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="torch: device (default: cpu)")
    add_threads(p)
    p.add_argument("--stream", action="store_true", help="print characters as they are generated (1 sample)")
    p.add_argument("--stats", action="store_true", help="print tokens/s to stderr (and, speculating, what the "
                   "drafts earned: characters per run of the model, a histogram of drafts accepted)")
    s = p.add_argument_group("speculative decoding (--backend onnxruntime, gqa layout, one sample)")
    s.add_argument("--speculative", metavar=SPECULATIVE_METAVAR, help=SPECULATIVE_HELP)
    s.add_argument("--draft-tokens", type=int, default=DEFAULT_DRAFT_TOKENS, metavar="K",
                   help=f"draft at most K characters per run, 1 .. block_size / 2 (default: {DEFAULT_DRAFT_TOKENS})")
    s.add_argument("--ngram-text", type=Path, metavar="FILE",
                   help="the training text the ngram index or the distilled table is made from, once (default: "
                   "DATA_DIR's Tiny Shakespeare)")
    s.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="where gpt.data put Tiny Shakespeare")
    s.add_argument("--show-accepted", action="store_true",
                   help="colour the characters that came from accepted drafts (ANSI green)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with flag_names("temperature", "top_k", "top_p", "max_new_tokens", "num_samples"):  # before the model loads
        params = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
        check_max_new_tokens(args.max_new_tokens)
        check_num_samples(args.num_samples)
    if args.speculative and args.backend != "onnxruntime":
        raise GPTError(f"--speculative needs --backend onnxruntime, not {args.backend}")
    if args.speculative and args.num_samples != 1:
        raise GPTError("--speculative decodes one sample (batch 1); drop --num-samples or run once per --seed")
    if args.show_accepted and not args.speculative:
        raise GPTError(f"--show-accepted colours accepted drafts: it needs --speculative {SPECULATIVE_METAVAR}")
    decoder = open_decoder(args.backend, args.onnx or args.ckpt, threads=args.threads, device=args.device,
                           use_cache=not args.no_cache, compile=args.compile)
    tokenizer = CharTokenizer(decoder.vocab)
    prompt_ids = prepare_prompt(tokenizer, args.prompt, decoder.block_size)
    if args.speculative:
        return sample_speculative(args, params, decoder, tokenizer, prompt_ids)
    if args.compile:
        generate(decoder, prompt_ids, min(args.max_new_tokens, 4), Sampler(params), args.num_samples)
    stream = args.stream and args.num_samples == 1
    on_token = None
    if stream:
        sys.stdout.write(tokenizer.decode(prompt_ids) if args.prompt else "")
        sys.stdout.flush()

        def on_token(token: np.ndarray) -> None:
            sys.stdout.write(tokenizer.itos[int(token[0])])
            sys.stdout.flush()

    start = time.perf_counter()
    out = generate(decoder, prompt_ids, args.max_new_tokens, Sampler(params), args.num_samples, on_token)
    elapsed = time.perf_counter() - start
    if stream:
        sys.stdout.write("\n")
    else:
        prompt = tokenizer.decode(prompt_ids) if args.prompt else ""
        print("\n---\n".join(prompt + tokenizer.decode(row) for row in out.tolist()))
    if args.stats:
        n = out.size
        print(f"generated {n} tokens in {elapsed:.3f} s ({n / max(elapsed, 1e-9):.1f} tok/s)", file=sys.stderr)
    return 0


def sample_speculative(args: argparse.Namespace, params: SamplingParams, decoder, tokenizer: CharTokenizer,
                       prompt_ids: list[int]) -> int:
    with flag_names("speculative", "draft_tokens"):
        model = check_speculative(decoder, args.draft_tokens)
        drafter = open_drafter(args.speculative, model, args.threads, args.ngram_text, args.data_dir,
                               say=lambda line: print(line, file=sys.stderr))
    stats = SpeculativeStats()
    pieces: list[str] = []
    green, plain = "\x1b[32m", "\x1b[0m"

    def on_token(token: int, drafted: bool) -> None:
        c = tokenizer.itos[token]
        piece = f"{green}{c}{plain}" if args.show_accepted and drafted else c
        if args.stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
        else:
            pieces.append(piece)

    prompt = tokenizer.decode(prompt_ids) if args.prompt else ""
    if args.stream:
        sys.stdout.write(prompt)
        sys.stdout.flush()
    start = time.perf_counter()
    out = generate_speculative(model, prompt_ids, args.max_new_tokens, params, drafter, args.draft_tokens,
                               on_token, stats)
    elapsed = time.perf_counter() - start
    print("" if args.stream else prompt + "".join(pieces))
    if args.stats:
        print(f"generated {len(out)} tokens in {elapsed:.3f} s ({len(out) / max(elapsed, 1e-9):.1f} tok/s)",
              file=sys.stderr)
        print(stats.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
