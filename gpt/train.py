"""Train the GPT: `python -m gpt.train --preset cpu --out-dir out`.

Every field of the model and training config can be overridden the nanoGPT way, e.g.
`--n_layer 2 --batch_size 8` (dashed spellings such as `--batch-size 8` work too).

Writes to --out-dir: model.safetensors + config.json (the best-val model, for sampling), train_state.pt
(the latest state, for --resume), log.jsonl (every evaluation) and loss.png (train/val curves).
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from gpt.attention import BACKENDS
from gpt.checkpoint import load_checkpoint, save_checkpoint
from gpt.config import PRESETS, ModelConfig, TrainConfig, get_preset
from gpt.data import BatchSampler, load_shakespeare, load_text, split
from gpt.errors import GPTError, run_cli
from gpt.fsutil import atomic_write_bytes, ensure_dir
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer

STATE = "train_state.pt"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gpt.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", help=f"one of: {', '.join(PRESETS)} (default: cpu)")
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--data", type=Path, help="train on your own UTF-8 text file instead of Tiny Shakespeare")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where gpt.data put Tiny Shakespeare")
    p.add_argument("--attention", choices=BACKENDS, default=None,
                   help="attention backend (default: sdpa; triton on CPU runs in the Triton interpreter)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="run the model under torch.compile (default: on)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                   help="autocast dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--resume", action="store_true", help=f"continue from --out-dir/{STATE}")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop (saving state for --resume) after iteration N, keeping the schedule of max_iters")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = p.add_argument_group("config overrides (defaults come from the preset)")
    for f in (*fields(ModelConfig), *fields(TrainConfig)):
        if f.name == "vocab_size":
            continue
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if f.type in (bool, "bool") else \
            {"int": int, "float": float}.get(str(f.type), f.type)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        group.add_argument(*names, dest=f"cfg_{f.name}", type=kind, default=None, metavar=f.name.upper())
    return p


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise GPTError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def lr_at(it: int, t: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters (a function of the config, not the run)."""
    if it < t.warmup_iters:
        return t.learning_rate * (it + 1) / (t.warmup_iters + 1)
    if it > t.lr_decay_iters:
        return t.min_lr
    ratio = (it - t.warmup_iters) / max(1, t.lr_decay_iters - t.warmup_iters)
    return t.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (t.learning_rate - t.min_lr)


@torch.no_grad()
def estimate_loss(model, splits: dict[str, np.ndarray], t: TrainConfig, block: int, device, amp, seed: int) -> dict:
    """Mean loss over eval_iters random batches per split, from RNGs of its own (training batches unaffected)."""
    model.eval()
    out = {}
    for i, (name, data) in enumerate(splits.items()):
        sampler = BatchSampler(data, block, t.batch_size, seed=seed + 7919 * (i + 1))
        losses = []
        for _ in range(t.eval_iters):
            x, y = (torch.from_numpy(a).to(device) for a in sampler.next())
            with amp:
                losses.append(model(x, y)[1].item())
        out[name] = float(np.mean(losses))
    model.train()
    return out


@torch.no_grad()
def full_loss(model: GPT, data: np.ndarray, block: int, device, batch_size: int = 64) -> float:
    """Mean next-token loss over the whole split in non-overlapping block_size windows."""
    model.eval()
    n = (len(data) - 1) // block
    starts = np.arange(n) * block
    total, count = 0.0, 0
    for b in range(0, n, batch_size):
        s = starts[b:b + batch_size, None] + np.arange(block)
        x = torch.from_numpy(data[s].astype(np.int64)).to(device)
        y = torch.from_numpy(data[s + 1].astype(np.int64)).to(device)
        loss = model(x, y)[1].item()
        total += loss * y.numel()
        count += y.numel()
    rest = len(data) - 1 - n * block
    if rest > 0:
        x = torch.from_numpy(data[n * block:-1].astype(np.int64))[None].to(device)
        y = torch.from_numpy(data[n * block + 1:].astype(np.int64))[None].to(device)
        total += model(x, y)[1].item() * rest
        count += rest
    return total / count


def plot_losses(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in ("train_loss", "val_loss"):
        ax.plot([r["iter"] for r in rows], [r[key] for r in rows], marker=".", label=key.replace("_", " "))
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, save, exit 0."""

    def __init__(self):
        self.signal: str | None = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        self.signal = signal.Signals(signum).name


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = get_preset(args.preset)
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    mc, tc = asdict(preset.model), asdict(preset.train)
    for k, v in overrides.items():
        (mc if k in mc else tc)[k] = v
    if "max_iters" in overrides and "lr_decay_iters" not in overrides:
        tc["lr_decay_iters"] = tc["max_iters"]
    train_cfg = TrainConfig(**tc)
    for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "gradient_accumulation_steps"):
        if getattr(train_cfg, name) < 1:
            raise GPTError(f"--{name} must be >= 1, got {getattr(train_cfg, name)}")
    device = resolve_device(args.device)
    out_dir = ensure_dir(args.out_dir)

    text = load_text(args.data) if args.data else load_shakespeare(args.data_dir)
    tokenizer = CharTokenizer.from_text(text)
    model_cfg = ModelConfig(**{**mc, "vocab_size": tokenizer.vocab_size})
    ids = np.array(tokenizer.encode(text), dtype=np.uint16 if tokenizer.vocab_size < 65536 else np.int64)
    train_data, val_data = split(ids)
    block = model_cfg.block_size

    attention = args.attention or "sdpa"
    if attention == "triton" and device.type == "cpu":
        print("note: --attention triton on CPU runs in the Triton interpreter (TRITON_INTERPRET=1): slow, for tests")
    dtype = DTYPES.get(args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    torch.manual_seed(args.seed)
    model = GPT(model_cfg, attention=attention).to(device)
    optimizer = torch.optim.AdamW(model.optimizer_groups(train_cfg.weight_decay), lr=train_cfg.learning_rate,
                                  betas=(train_cfg.beta1, train_cfg.beta2), fused=device.type == "cuda")
    train_sampler = BatchSampler(train_data, block, train_cfg.batch_size, seed=args.seed)
    start_iter, best_val = 0, float("inf")
    log_path = out_dir / "log.jsonl"
    if args.resume:
        start_iter, best_val = load_state(out_dir, model, optimizer, train_sampler, model_cfg, device)
        print(f"resuming from iteration {start_iter} (best val loss so far {best_val:.4f})")
    else:
        log_path.write_text("")
    run = torch.compile(model) if args.compile else model
    print(f"{model.num_params() / 1e6:.2f}M parameters, preset {args.preset}, {device.type}, attention {attention}, "
          f"compile {'on' if args.compile else 'off'}, {len(train_data):,} train / {len(val_data):,} val tokens")

    def save_state(it: int) -> None:
        state = {
            "iter": it, "best_val": best_val, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": model_cfg.to_dict(), "sampler": json.dumps(train_sampler.state()),
            "torch_rng": torch.get_rng_state(),
        }
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(out_dir / STATE, buf.getvalue())

    stop = StopRequest()
    from tqdm import tqdm

    tokens_per_iter = train_cfg.batch_size * block * train_cfg.gradient_accumulation_steps
    end_iter = min(train_cfg.max_iters, args.stop_after or train_cfg.max_iters)
    bar = tqdm(range(start_iter, end_iter), initial=start_iter, total=end_iter, disable=args.no_progress,
               dynamic_ncols=True, file=sys.stdout)
    model.train()
    t0, it = time.perf_counter(), start_iter
    for it in bar:
        if it % train_cfg.eval_interval == 0 and it > 0 or it == 0 and not args.resume:
            losses = estimate_loss(run, {"train": train_data, "val": val_data}, train_cfg, block, device, amp,
                                   args.seed)
            with open(log_path, "a") as f:
                f.write(json.dumps({"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                                    "lr": lr_at(it, train_cfg), "time": time.time()}) + "\n")
            bar.write(f"iter {it}: train {losses['train']:.4f}, val {losses['val']:.4f}")
            if losses["val"] < best_val:
                best_val = losses["val"]
                save_checkpoint(out_dir, model, tokenizer, iter=it, val_loss=best_val, val_loss_kind="estimate")
            t0 = time.perf_counter()
        lr = lr_at(it, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(train_cfg.gradient_accumulation_steps):
            x, y = (torch.from_numpy(a).to(device, non_blocking=True) for a in train_sampler.next())
            with amp:
                _, loss = run(x, y)
            (loss / train_cfg.gradient_accumulation_steps).backward()
        if not torch.isfinite(loss):
            raise GPTError(f"loss became {loss.item()} at iteration {it}; the last good checkpoint in {out_dir} "
                           "is kept (try a lower --learning_rate)")
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (it + 1) % train_cfg.log_interval == 0:
            now = time.perf_counter()
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            tok_s=f"{tokens_per_iter * train_cfg.log_interval / (now - t0):,.0f}")
            t0 = now
        if stop.signal:
            save_state(it + 1)
            print(f"{stop.signal}: saved state at iteration {it + 1}; continue with "
                  f"`python -m gpt.train --out-dir {out_dir} --resume` (same options)")
            return 0
    bar.close()
    it = end_iter
    save_state(it)
    if it < train_cfg.max_iters:
        print(f"stopped after iteration {it} of {train_cfg.max_iters}; continue with --resume")
        return 0
    final = estimate_loss(run, {"train": train_data, "val": val_data}, train_cfg, block, device, amp, args.seed)
    with open(log_path, "a") as f:
        f.write(json.dumps({"iter": it, "train_loss": final["train"], "val_loss": final["val"],
                            "lr": lr_at(it, train_cfg), "time": time.time()}) + "\n")
    if final["val"] < best_val:
        best_val = final["val"]
        save_checkpoint(out_dir, model, tokenizer, iter=it, val_loss=best_val, val_loss_kind="estimate")
    best, _, manifest = load_checkpoint(out_dir, device=device)
    with amp:
        val = full_loss(best, val_data, block, device)
    save_checkpoint(out_dir, best, tokenizer, iter=manifest["iter"], val_loss=val, val_loss_kind="full pass",
                    val_loss_estimate=manifest["val_loss"])
    plot_losses(log_path, out_dir / "loss.png")
    print(f"done: best model (iteration {manifest['iter']}) has val loss {val:.4f} (full pass over "
          f"{len(val_data):,} tokens); saved to {out_dir}/model.safetensors")
    return 0


def load_state(out_dir: Path, model: GPT, optimizer, sampler: BatchSampler, model_cfg: ModelConfig,
               device) -> tuple[int, float]:
    path = out_dir / STATE
    if not path.is_file():
        raise GPTError(f"--resume: {path} not found; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        raise GPTError(f"--resume: {path} cannot be read ({type(e).__name__}); start without --resume") from None
    if state["model_config"] != model_cfg.to_dict():
        raise GPTError(f"--resume: {path} was trained with a different model config: {state['model_config']}")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    sampler.set_state(json.loads(state["sampler"]))
    torch.set_rng_state(state["torch_rng"])
    return state["iter"], state["best_val"]


if __name__ == "__main__":
    run_cli(main)
