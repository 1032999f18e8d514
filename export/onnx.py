"""Export a checkpoint to one self-describing ONNX file with a KV cache, verify it, optionally quantize it.

    python -m export.onnx --ckpt out [--out out/model.onnx] [--attention gqa|onnx|sdpa|naive] [--opset 23]
                                     [--quantize int8] [--quantize int4] [--genai] [--no-verify] [--eval]

Layouts (`--attention`; both serve prefill and decode from one graph, both samplable with no torch):

    gqa   (default) onnxruntime's GroupQueryAttention per layer; past and present are ONE preallocated
          buffer of block_size positions that the op writes in place; `gpt.sample --backend onnxruntime`
          binds it once (IO binding), so a decode step allocates and copies nothing that grows with the
          context. onnxruntime only (it is a com.microsoft contrib op).
    onnx  the standard opset-23 Attention op per layer with a concat-style cache (past in, past + new out):
          the portable file for other ONNX runtimes and the web.
    sdpa / naive   the model's own attention traced op by op (any opset >= 18, e.g. --opset 18).

Inputs `input_ids` [batch, seq], (gqa) `attention_mask` [batch, past + seq], `past_key_values.{i}.key/.value`;
outputs `logits` and `present.{i}.key/.value` (optimum's names). The vocabulary, model shape and layout live
in the file's metadata_props. The export is checked (onnx.checker, then onnxruntime against PyTorch on a
prefill and 32 decode steps, max |diff| <= 1e-4) unless --no-verify.

--quantize (repeatable) also writes OUT.<kind>.onnx (the fastest measured scheme of each width is its default):
    int8        DynamicQuantizeMatMul: int8 weights, activations quantized per call (~4x smaller)
    int4        MatMulNBits: 4-bit weight blocks of 32, int8 compute (accuracy_level 4; ~6x smaller, fastest)
    int8-nbits  MatMulNBits: 8-bit weight blocks of 32, int8 compute (measured slower than int8 here)
--genai also writes genai_config.json beside OUT, so the pip package onnxruntime-genai runs the same file.
--explain also writes OUT.explain.onnx: the model on a whole text, returning each layer's q, k, v and attention
    probabilities and the logit lens beside the logits (what the web page's explorer shows; export/explain.py).
    OUT itself is the same file with or without it.
--eval prints each file's loss over the whole validation split.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from export.evaluate import onnx_loss, val_tokens
from export.explain import add_explain_metadata, explain_parity, explain_path, export_explain_proto
from export.graph import ATTENTION, DEFAULT_OPSET, add_metadata, check_opset, export_proto, serialize
from export.quantize import SCHEMES, quantize
from export.verify import TOLERANCE, check_model, node_count, parity, require_parity
from gpt.errors import ArgumentParser, GPTError, add_threads, run_cli
from gpt.fsutil import atomic_write_bytes
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint
from gpt.tokenizer import CharTokenizer


class Stages:
    """One progress line per stage (tqdm when installed), with its time."""

    def __init__(self, names: list[str]):
        self.names, self.i = names, 0
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=len(names), bar_format="{desc} [{n_fmt}/{total_fmt}] {elapsed}", file=sys.stderr,
                            leave=True, disable=None)
        except ImportError:
            self.bar = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        if self.bar is not None:
            self.bar.set_description_str(f"{name} ...")
        yield
        self.i += 1
        if self.bar is not None:
            self.bar.set_description_str(name)
            self.bar.update(1)
            self.bar.write(f"[{self.i}/{len(self.names)}] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        else:
            print(f"[{self.i}/{len(self.names)}] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m export.onnx", description=__doc__)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--out", type=Path, help="ONNX file to write (default: CKPT/model.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--attention", choices=ATTENTION, default="gqa",
                   help="gqa: in-place cache, fastest on onnxruntime (default); onnx: standard opset-23 "
                        "Attention, portable; sdpa/naive: trace the model's own attention")
    p.add_argument("--quantize", choices=tuple(SCHEMES), action="append", default=[],
                   help="also write OUT.<kind>.onnx (see above); repeatable")
    p.add_argument("--genai", action="store_true", help="also write genai_config.json for onnxruntime-genai")
    p.add_argument("--explain", action="store_true", help="also write OUT.explain.onnx for the web page's explorer "
                   "(attention, q/k/v and logit lens of a whole text)")
    p.add_argument("--no-verify", action="store_true", help="skip onnx.checker and the onnxruntime parity check")
    p.add_argument("--eval", action="store_true", help="val loss of the ONNX file(s) over the whole val split")
    p.add_argument("--data", type=Path, help="text the checkpoint was trained on (default: Tiny Shakespeare)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where gpt.data put Tiny Shakespeare")
    add_threads(p, "onnxruntime threads for checks (default: cores)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_opset(args.attention, args.opset)
    if args.genai and args.attention != "gqa":
        raise GPTError("--genai needs --attention gqa (onnxruntime-genai shares past and present buffers)")
    out = args.out or args.ckpt / "model.onnx"
    if out.suffix != ".onnx":
        raise GPTError(f"--out must end in .onnx, got {out}")
    if out.exists() and out.is_dir():
        raise GPTError(f"--out {out} is a directory")
    model, tokenizer, manifest = load_checkpoint(args.ckpt)
    val = val_tokens(tokenizer, args.data, args.data_dir) if args.eval else None  # fail early on bad data
    out.parent.mkdir(parents=True, exist_ok=True)

    kinds = list(dict.fromkeys(args.quantize))
    names = ["export"] + ([] if args.no_verify else ["onnx.checker", "parity vs PyTorch"])
    names += [f"quantize {kind}" for kind in kinds] + ["genai_config.json"] * args.genai
    names += ["explain graph"] * args.explain + ["val loss"] * args.eval
    stages = Stages(names)
    files = [("fp32", out)]
    diffs: dict[str, dict] = {}
    losses: dict[str, float] = {}
    try:
        with stages("export"):
            proto = export_proto(model, args.opset, args.attention)
            add_metadata(proto, tokenizer, model, manifest.get("val_loss"), args.attention,
                         manifest.get("data_sha256"))
            try:
                atomic_write_bytes(out, serialize(proto))
            except OSError as e:
                raise GPTError(f"cannot write {out}: {e.strerror or e}") from None
            del proto
        if not args.no_verify:
            with stages("onnx.checker"):
                check_model(out)
            with stages("parity vs PyTorch"):
                diffs["fp32"] = parity(out, model)
            require_parity(diffs["fp32"], out)
        for kind in kinds:
            with stages(f"quantize {kind}"):
                path = out.with_name(f"{out.stem}.{kind}.onnx")
                quantize(out, path, SCHEMES[kind])
                files.append((kind, path))
                if not args.no_verify:
                    diffs[kind] = parity(path, model)
        if args.genai:
            with stages("genai_config.json"):
                from export.genai import write_genai_config

                write_genai_config(out, model.config)
        if args.explain:
            with stages("explain graph"):
                write_explain(out, model, tokenizer, verify=not args.no_verify)
        if args.eval:
            with stages("val loss"):
                for kind, path in files:
                    losses[kind] = onnx_loss(path, val, model.config.block_size, threads=args.threads)
    finally:
        stages.close()
    print_report(files, diffs, losses, args.opset, kinds)
    return 0


def write_explain(out: Path, model: GPT, tokenizer: CharTokenizer, verify: bool) -> None:
    """OUT.explain.onnx, checked like OUT (onnx.checker, logits against PyTorch) unless --no-verify."""
    path = explain_path(out)
    proto = export_explain_proto(model)
    add_explain_metadata(proto, tokenizer, model)
    try:
        atomic_write_bytes(path, serialize(proto))
    except OSError as e:
        raise GPTError(f"cannot write {path}: {e.strerror or e}") from None
    if verify:
        check_model(path)
        diff = explain_parity(path, model)
        if diff > TOLERANCE:
            raise GPTError(f"the explain graph's logits differ from PyTorch by {diff:.2e} > {TOLERANCE:.0e}; "
                           f"{path} is kept for inspection")
    print(f"explain: {path} ({path.stat().st_size / 1e6:.2f} MB; q, k, v, attention and logit lens of a whole "
          f"text)" + (f", max |diff| {diff:.2e} against PyTorch" if verify else ""))


def print_report(files: list[tuple[str, Path]], diffs: dict[str, dict], losses: dict[str, float], opset: int,
                 kinds: list[str]) -> None:
    rows = []
    for kind, path in files:
        d = diffs.get(kind)
        rows.append([kind, str(path), f"{path.stat().st_size / 1e6:.2f} MB", str(opset), str(node_count(path)),
                     f"{max(d['prefill'], d['decode']):.2e}" if d else "-",
                     f"{losses[kind]:.4f}" if kind in losses else "-"])
    header = ["model", "file", "size", "opset", "nodes", "max |diff|", "val loss"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if "fp32" in diffs:
        d = diffs["fp32"]
        print(f"parity: prefill of {d['prompt']} tokens + {d['steps']} decode steps, batch {d['batch']}: "
              f"max |onnxruntime - PyTorch| = {max(d['prefill'], d['decode']):.2e} (tolerance {TOLERANCE:.0e})")
    for kind in kinds:
        if "fp32" in losses and kind in losses:
            print(f"{kind} val loss - fp32 val loss = {losses[kind] - losses['fp32']:+.4f} nats")


if __name__ == "__main__":
    run_cli(main)
