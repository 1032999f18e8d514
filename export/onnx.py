"""Export a checkpoint to one self-describing ONNX graph with a KV cache, verify it, optionally quantize it.

    python -m export.onnx --ckpt out [--out out/model.onnx] [--opset 23] [--attention onnx|sdpa|naive]
                                     [--quantize int8] [--quantize int4] [--no-verify] [--eval [--data FILE]]

The graph serves prefill and decode (Hugging Face optimum naming):

    inputs   input_ids                   int64   [batch, seq]
             past_key_values.{i}.key     float32 [batch, n_head, past, head_dim]   (and .value, every layer i)
    outputs  logits                      float32 [batch, seq, vocab]
             present.{i}.key             float32 [batch, n_head, past + seq, head_dim]   (and .value)

batch, seq and past are dynamic; past = 0 (empty tensors) is the prefill. Positions start at the past length
and the causal mask is offset by it, inside the graph. The vocabulary and model shape travel in the file's
metadata_props, so `python -m gpt.sample --backend onnxruntime` needs nothing else (and no torch).

By default every layer's attention is one ONNX `Attention` op (opset 23, onnxruntime >= 1.23) that appends to
the cache itself; `--attention sdpa --opset 18` traces GPT.forward as is, for older runtimes. The export is
checked (onnx.checker, then onnxruntime against PyTorch on a prefill and 32 decode steps, max |diff| <= 1e-4)
unless --no-verify. `--quantize int8` also writes OUT.int8.onnx (dynamic int8 MatMul weights: ~4x smaller and
~2x faster to decode); `--eval` prints each file's loss over the whole validation split.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gpt.attention import offset_causal_mask
from gpt.checkpoint import load_checkpoint
from gpt.decoders.ort_decoder import FORMAT_VERSION, OrtDecoder, input_names, output_names
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.fsutil import atomic_write_bytes
from gpt.kv_cache import ConcatKVCache
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer

DEFAULT_OPSET = 23  # the first with the Attention op
TOLERANCE = 1e-4  # fp32 parity, max |onnxruntime - PyTorch| over the logits
DECODE_STEPS = 32
# "onnx": one ONNX Attention op per layer (opset >= 23, fastest); "sdpa"/"naive": trace GPT.forward's own path
# (any opset; triton is a GPU kernel and cannot be traced).
EXPORT_ATTENTION = ("onnx", "sdpa", "naive")
QUANTIZE = ("int8", "int4")


class KVExportWrapper(nn.Module):
    """(input_ids, past k0, past v0, past k1, ...) -> (logits, present k0, present v0, ...): flat, as ONNX wants.

    Traces GPT.forward itself with a ConcatKVCache: positions start at the past length and the sdpa/naive
    attention builds the causal mask offset by it.
    """

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = self.model.config.n_layer
        cache = ConcatKVCache([(past[2 * i], past[2 * i + 1]) for i in range(n)])
        logits, _ = self.model(input_ids, cache=cache)
        return (logits, *[t for kv in cache.present for t in kv])


class OnnxAttentionWrapper(KVExportWrapper):
    """The same function and signature, with each layer's attention as ONE ONNX `Attention` op (opset 23) that
    takes the layer's packed q/k/v, the past keys/values and the offset causal mask, and returns `present`
    itself: 12 fewer nodes per layer than the traced split/reshape/transpose/concat/attention chain.
    Built from the model's own modules; `parity` checks it against GPT.forward.
    """

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, c = self.model, self.model.config
        T, P = input_ids.size(1), past[0].size(2)
        x = m.drop(m.wte(input_ids) + m.wpe(torch.arange(P, P + T, device=input_ids.device)))
        mask = offset_causal_mask(T, P + T, input_ids.device)
        present = []
        for i, block in enumerate(m.h):
            attn = block.attn
            q, k, v = attn.c_attn(block.ln_1(x)).split(c.n_embd, dim=2)
            y, k, v, _ = torch.onnx.ops.attention(q, k, v, mask, past[2 * i], past[2 * i + 1],
                                                  q_num_heads=c.n_head, kv_num_heads=c.n_head)
            x = x + attn.resid_dropout(attn.c_proj(y))
            x = x + block.mlp(block.ln_2(x))
            present += [k, v]
        return (m.lm_head(m.ln_f(x)), *present)


# --------------------------------------------------------------------------------------------- export


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.onnx.export is chatty (warnings, progress prints, missing-torchvision notes): keep stage lines clean."""
    loggers = [logging.getLogger(n) for n in ("", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_proto(model: GPT, opset: int = DEFAULT_OPSET, attention: str = "onnx"):
    """Trace the model with dynamic batch/seq/past into an onnx.ModelProto."""
    c = model.config
    if attention not in EXPORT_ATTENTION:
        raise GPTError(f"unknown export attention {attention!r}; choose one of: {', '.join(EXPORT_ATTENTION)}")
    if attention == "onnx":
        if opset < 23:
            raise GPTError(f"--attention onnx needs --opset 23 or later (got {opset}); or use --attention sdpa")
        if not hasattr(getattr(torch.onnx, "ops", None), "attention"):
            raise GPTError(f"--attention onnx needs torch.onnx.ops.attention (torch >= 2.9; this is "
                           f"{torch.__version__}); use --attention sdpa")
        wrapper = OnnxAttentionWrapper(model.eval())
    else:
        model.set_attention(attention)
        wrapper = KVExportWrapper(model.eval())
    # Example sizes > 1 everywhere: torch.export specializes dimensions that are 0 or 1 in the example.
    B, T, P = 2, 3, 2
    if T + P > c.block_size:
        raise GPTError(f"block_size {c.block_size} is too small to export (needs >= {T + P})")
    ids = torch.zeros((B, T), dtype=torch.int64)
    past = [torch.zeros((B, c.n_head, P, c.head_dim)) for _ in range(2 * c.n_layer)]
    batch = torch.export.Dim("batch_size", min=1, max=65536)
    seq = torch.export.Dim("sequence_length", min=1, max=c.block_size)
    past_len = torch.export.Dim("past_sequence_length", min=0, max=c.block_size)
    dynamic = ({0: batch, 1: seq}, tuple({0: batch, 2: past_len} for _ in past))
    try:
        with quiet(), torch.no_grad():
            program = torch.onnx.export(wrapper, (ids, *past), None, dynamo=True, opset_version=opset,
                                        input_names=input_names(c.n_layer), output_names=output_names(c.n_layer),
                                        dynamic_shapes=dynamic, optimize=True, verbose=False)
    except Exception as e:
        raise GPTError(f"torch.onnx.export failed at opset {opset}: {type(e).__name__}: "
                       f"{' '.join(str(e).split())[:300]}") from None
    return program.model_proto


def add_metadata(proto, tokenizer: CharTokenizer, model: GPT, val_loss: float | None) -> None:
    c = model.config
    meta = {
        "vocab": json.dumps(tokenizer.itos, ensure_ascii=False),
        "block_size": str(c.block_size),
        "n_layer": str(c.n_layer),
        "n_head": str(c.n_head),
        "n_embd": str(c.n_embd),
        "val_loss": json.dumps(val_loss),
        "format_version": str(FORMAT_VERSION),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def serialize(proto) -> bytes:
    if proto.ByteSize() >= 2**31 - 1:
        raise GPTError("the model is over 2 GB, too large for a single-file ONNX export")
    return proto.SerializeToString()


# ---------------------------------------------------------------------------------------------- checks


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def check_model(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as e:
        raise GPTError(f"onnx.checker rejected {path}: {' '.join(str(e).split())[:300]}") from None


def parity(path: Path, model: GPT, batch: int = 2, steps: int = DECODE_STEPS, seed: int = 0) -> dict:
    """Max |onnxruntime - PyTorch| of the logits: every position of a prefill, then `steps` decode steps."""
    c = model.config
    prompt_len = max(1, min(16, c.block_size // 4))
    steps = min(steps, c.block_size - prompt_len)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, c.vocab_size, size=(batch, prompt_len), dtype=np.int64)
    decoder = OrtDecoder.from_file(path, threads=1)
    cache = model.new_cache(batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add synchronisation (and stall on a busy machine)
    with contextlib.ExitStack() as restore, torch.inference_mode():
        restore.callback(torch.set_num_threads, threads)
        ref, _ = model(torch.from_numpy(ids), cache=cache)
        got = decoder.forward(ids, decoder.empty_cache(batch))
        prefill_diff = float(np.abs(got - ref.numpy()).max())
        decode_diff = 0.0
        token = ref[:, -1].argmax(-1, keepdim=True)
        for _ in range(steps):
            ref, _ = model(token, cache=cache)
            got = decoder.step(token.numpy())
            decode_diff = max(decode_diff, float(np.abs(got - ref[:, -1].numpy()).max()))
            token = ref[:, -1].argmax(-1, keepdim=True)
    return {"prefill": prefill_diff, "decode": decode_diff, "steps": steps, "prompt": prompt_len, "batch": batch}


# ------------------------------------------------------------------------------------------- quantize


def quantize(src: Path, dst: Path, kind: str) -> None:
    """Quantize the MatMul weights, keeping the metadata.

    int8: onnxruntime's dynamic quantization (int8 weights, activations quantized on the fly per call).
    int4: weight-only 4-bit blocks of 32 (MatMulNBits, symmetric, int8 compute where the CPU allows).
    """
    import onnx

    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp, quiet():
        out = Path(tmp) / dst.name
        if kind == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                             extra_options={"MatMulConstBOnly": True})
            proto = onnx.load(str(out))
        elif kind == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=32, is_symmetric=True,
                                     accuracy_level=4)
            q.process()
            proto = q.model.model
        else:
            raise GPTError(f"unknown quantization {kind!r}; choose one of: {', '.join(QUANTIZE)}")
    source = onnx.load(str(src), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.extend(source.metadata_props)
    atomic_write_bytes(dst, serialize(proto))


# ----------------------------------------------------------------------------------------------- eval


def val_tokens(tokenizer: CharTokenizer, data: Path | None, data_dir: Path) -> np.ndarray:
    from gpt.data import load_shakespeare, load_text, split

    text = load_text(data) if data else load_shakespeare(data_dir)
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    _, val = split(ids)
    if len(val) < 2:
        raise GPTError("the validation split holds fewer than 2 tokens; use more text")
    return val


def onnx_loss(path: Path, data: np.ndarray, block: int, batch_size: int = 16, threads: int | None = None) -> float:
    """Mean next-token loss over `data` in non-overlapping block_size windows (as gpt.train.full_loss)."""
    from gpt.data import eval_windows

    decoder = OrtDecoder.from_file(path, threads=threads)

    def nll(x: np.ndarray, y: np.ndarray) -> float:
        logits = decoder.forward(x, decoder.empty_cache(len(x))).astype(np.float64)
        m = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - m).sum(-1)) + m[..., 0]
        return float((logz - np.take_along_axis(logits, y[..., None], -1)[..., 0]).sum())

    total, count = 0.0, 0
    for x, y in eval_windows(data, block, batch_size):
        total += nll(x, y)
        count += y.size
    return total / count


# ------------------------------------------------------------------------------------------------ CLI


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
    p = ArgumentParser(prog="python -m export.onnx", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--out", type=Path, help="ONNX file to write (default: CKPT/model.onnx)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--attention", choices=EXPORT_ATTENTION, default="onnx",
                   help="onnx: one Attention op per layer (opset >= 23, default); sdpa/naive: trace the model's own")
    p.add_argument("--quantize", choices=QUANTIZE, action="append", default=[],
                   help="also write OUT.int8.onnx (dynamic int8, MatMul weights) or OUT.int4.onnx (4-bit "
                        "MatMulNBits); repeatable")
    p.add_argument("--no-verify", action="store_true", help="skip onnx.checker and the onnxruntime parity check")
    p.add_argument("--eval", action="store_true", help="val loss of the ONNX file(s) over the whole val split")
    p.add_argument("--data", type=Path, help="text the checkpoint was trained on (default: Tiny Shakespeare)")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where gpt.data put Tiny Shakespeare")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads for checks (default: cores)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 18 <= args.opset <= 23:
        raise GPTError(f"--opset must be in [18, 23], got {args.opset}")
    if args.threads is not None and args.threads < 1:
        raise GPTError(f"--threads must be >= 1, got {args.threads}")
    if args.attention == "onnx" and args.opset < 23:
        raise GPTError(f"--attention onnx needs --opset 23 (got {args.opset}); add --attention sdpa for older opsets")
    out = args.out or args.ckpt / "model.onnx"
    if out.suffix != ".onnx":
        raise GPTError(f"--out must end in .onnx, got {out}")
    if out.exists() and out.is_dir():
        raise GPTError(f"--out {out} is a directory")
    model, tokenizer, manifest = load_checkpoint(args.ckpt)
    val = val_tokens(tokenizer, args.data, args.data_dir) if args.eval else None  # fail early on bad data
    out.parent.mkdir(parents=True, exist_ok=True)

    names = ["export"] + ([] if args.no_verify else ["onnx.checker", "parity vs PyTorch"])
    kinds = list(dict.fromkeys(args.quantize))
    names += [f"quantize {kind}" for kind in kinds] + ["val loss"] * args.eval
    stages = Stages(names)
    rows = []
    try:
        with stages("export"):
            proto = export_proto(model, args.opset, args.attention)
            add_metadata(proto, tokenizer, model, manifest.get("val_loss"))
            try:
                atomic_write_bytes(out, serialize(proto))
            except OSError as e:
                raise GPTError(f"cannot write {out}: {e.strerror or e}") from None
            del proto
        files = [("fp32", out)]
        diffs: dict[str, dict] = {}
        if not args.no_verify:
            with stages("onnx.checker"):
                check_model(out)
            with stages("parity vs PyTorch"):
                diffs["fp32"] = d = parity(out, model)
            if max(d["prefill"], d["decode"]) > TOLERANCE:
                raise GPTError(f"onnxruntime logits differ from PyTorch by {max(d['prefill'], d['decode']):.2e} "
                               f"> {TOLERANCE:.0e} (prefill {d['prefill']:.2e}, decode {d['decode']:.2e}); "
                               f"{out} is kept for inspection")
        for kind in kinds:
            with stages(f"quantize {kind}"):
                path = out.with_name(f"{out.stem}.{kind}.onnx")
                quantize(out, path, kind)
                files.append((kind, path))
                if not args.no_verify:
                    diffs[kind] = parity(path, model)
        losses = {}
        if args.eval:
            with stages("val loss"):
                for kind, path in files:
                    losses[kind] = onnx_loss(path, val, model.config.block_size, threads=args.threads)
    finally:
        stages.close()

    for kind, path in files:
        d = diffs.get(kind)
        rows.append([kind, str(path), f"{path.stat().st_size / 1e6:.2f} MB", str(args.opset), str(node_count(path)),
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
    return 0


if __name__ == "__main__":
    run_cli(main)
