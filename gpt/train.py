"""Train the GPT: `python -m gpt.train --preset cpu --out-dir out`.

Every field of the model and training config can be overridden the nanoGPT way, e.g.
`--n_layer 2 --batch_size 8` (dashed spellings such as `--batch-size 8` work too).

Writes to --out-dir: model.safetensors + config.json (the best-val model, for sampling), train_state.pt
(the latest state, for --resume: weights, optimizer, iteration, RNG states and data-sampler positions,
saved at every evaluation and on exit), log.jsonl (every evaluation) and loss.png (train/val curves).
Every file is replaced atomically; a kill at any instant leaves a loadable checkpoint and a resumable state.

`--resume` continues exactly where train_state.pt left off: on CPU, stopping (--stop-after N, Ctrl-C,
SIGTERM, kill -9) and resuming gives the same losses and weights, bit for bit, as one uninterrupted run.
Ctrl-C or SIGTERM finishes the current step, saves, and exits 0 (a second Ctrl-C aborts at once).

Several GPUs or nodes: `torchrun --nproc_per_node=N -m gpt.train ... --gradient_accumulation_steps K`
(K a multiple of the number of processes: the global batch stays batch_size * K sequences).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from gpt.attention import BACKENDS
from gpt.checkpoint import load_checkpoint, recover, save_checkpoint
from gpt.config import PRESETS, ModelConfig, TrainConfig, get_preset
from gpt.data import BatchSampler, eval_windows, load_shakespeare, load_text, split
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.fsutil import (
    atomic_write_bytes,
    atomic_write_text,
    check_dir,
    ensure_dir,
    fault_point,
    fault_spec,
    remove_stale_temps,
)
from gpt.model import GPT
from gpt.tokenizer import CharTokenizer

STATE = "train_state.pt"
LOG = "log.jsonl"
STATE_VERSION = 2
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.train", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="cpu", help=f"one of: {', '.join(PRESETS)} (default: cpu)")
    p.add_argument("--out-dir", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--data", type=Path, help="train on your own UTF-8 text file instead of Tiny Shakespeare")
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where gpt.data put Tiny Shakespeare")
    p.add_argument("--attention", choices=BACKENDS, default=None,
                   help="attention backend (default: sdpa; triton on CPU runs in the Triton interpreter)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="run the model under torch.compile (default: on with CUDA; off on CPU, where "
                        "`make bench` measures compiled training steps no faster than eager ones)")
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
        kind = parse_bool if f.type in (bool, "bool") else {"int": int, "float": float}.get(str(f.type), f.type)
        names = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        group.add_argument(*names, dest=f"cfg_{f.name}", type=kind, default=None, metavar=f.name.upper())
    return p


def validate(t: TrainConfig, args: argparse.Namespace) -> None:
    """Every training setting in range, or a one-line `GPTError` naming it."""
    for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "log_interval",
                 "gradient_accumulation_steps"):
        if getattr(t, name) < 1:
            raise GPTError(f"--{name} must be >= 1, got {getattr(t, name)}")
    for name in ("warmup_iters", "lr_decay_iters"):
        if getattr(t, name) < 0:
            raise GPTError(f"--{name} must be >= 0, got {getattr(t, name)}")
    for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
        value = getattr(t, name)
        if not (math.isfinite(value) and value >= 0):
            raise GPTError(f"--{name} must be a finite number >= 0, got {value}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(t, name) < 1:
            raise GPTError(f"--{name} must be in [0, 1), got {getattr(t, name)}")
    if args.stop_after is not None and args.stop_after < 1:
        raise GPTError(f"--stop-after must be >= 1, got {args.stop_after}")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise GPTError("--device cuda was asked for but CUDA is not available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (nccl on CUDA, gloo on CPU), one GPU per process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    import torch.distributed as td

    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world)
    device = resolve_device(device_name)
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise GPTError(f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                           "use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    td.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return d, device


def grad_scaler(dtype: torch.dtype, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 autocast on CUDA (small fp16 gradients underflow to 0); a no-op otherwise."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16 and device.type == "cuda")


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
    total, count = 0.0, 0
    for x, y in eval_windows(data, block, batch_size):
        total += model(torch.from_numpy(x).to(device), torch.from_numpy(y).to(device))[1].item() * y.size
        count += y.size
    return total / count


def read_log(log_path: Path) -> list[dict]:
    """The log's rows; a torn last line (a kill mid-write) is skipped."""
    rows = []
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_log(log_path: Path, row: dict) -> None:
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def plot_losses(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())


class StopRequest:
    """SIGINT/SIGTERM: finish the current step, save, exit 0. A second signal (2 s or more later) aborts at once.

    A context manager: the previous handlers come back on exit (so in-process callers keep their Ctrl-C).
    """

    def __init__(self):
        self.signal: str | None = None
        self.first = 0.0
        self.previous: dict = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal:
            if time.monotonic() - self.first > 2.0:  # not the same Ctrl-C relayed by torchrun to its workers
                raise KeyboardInterrupt
            return
        self.signal, self.first = signal.Signals(signum).name, time.monotonic()


def rng_state(sampler: BatchSampler, device: torch.device) -> dict:
    """Everything random that training consumes, for this process (weights_only-loadable types only)."""
    legacy = np.random.get_state()
    return {
        "sampler": json.dumps(sampler.state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
        "python": json.dumps(random.getstate()),
        "numpy": json.dumps([legacy[0], legacy[1].tolist(), *legacy[2:]]),
    }


def set_rng_state(state: dict, sampler: BatchSampler, device: torch.device) -> None:
    sampler.set_state(json.loads(state["sampler"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None and state["cuda"].numel():
        torch.cuda.set_rng_state(state["cuda"], device)
    if "python" in state:
        version, internal, gauss = json.loads(state["python"])
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, *rest = json.loads(state["numpy"])
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))


def load_state(path: Path, model: GPT, optimizer, model_cfg: ModelConfig, device) -> dict:
    """train_state.pt, loaded with weights_only=True (no pickled code runs), into the model and optimizer."""
    if not path.is_file():
        raise GPTError(f"--resume: {path} not found; start without --resume")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises many kinds
        reason = " ".join(str(e).split())[:160]
        raise GPTError(f"--resume: {path} cannot be read ({type(e).__name__}: {reason}); start without --resume "
                       "or restore the file") from None
    try:
        if state["model_config"] != model_cfg.to_dict():
            changed = sorted(k for k, v in model_cfg.to_dict().items() if state["model_config"].get(k) != v)
            raise GPTError(f"--resume: {path} was trained with a different model ("
                           + ", ".join(f"{k} {state['model_config'].get(k)} not {getattr(model_cfg, k)}"
                                       for k in changed)
                           + "); pass the same options and data as the first run")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "ranks" not in state:  # version 1: one process, sampler and torch RNG only
            state["ranks"] = [{"sampler": state["sampler"], "torch": state["torch_rng"]}]
        state.setdefault("world_size", len(state["ranks"]))
        int(state["iter"]), float(state["best_val"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise GPTError(f"--resume: {path} is not a train state this version can read ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]}); start without --resume") from None
    return state


def changes(state: dict, t: TrainConfig, seed: int, data_sha256: str) -> list[str]:
    """What differs between the run that saved `state` and this one (a resume is exact only without changes)."""
    notes = []
    if state.get("data_sha256", data_sha256) != data_sha256:
        notes.append("the training text differs from the one train_state.pt was trained on")
    if state.get("seed", seed) != seed:
        notes.append(f"--seed {seed} differs from the saved run's {state['seed']}")
    if "train_config" in state:
        saved, now = json.loads(state["train_config"]), asdict(t)
        changed = [f"{k} {saved[k]} -> {now[k]}" for k in now if k in saved and saved[k] != now[k]]
        if changed:
            notes.append("resuming with changed settings: " + ", ".join(changed))
    return notes


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
    validate(train_cfg, args)
    ModelConfig(**{**mc, "vocab_size": 1})  # shape errors before the data is read
    check_dir(args.out_dir)
    dist, device = setup_distributed(args.device)
    try:
        with StopRequest() as stop:
            return train(args, train_cfg, mc, dist, device, stop)
    finally:
        if dist.enabled:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


def train(args, train_cfg: TrainConfig, mc: dict, dist: Dist, device: torch.device, stop: StopRequest) -> int:
    master = dist.master
    say = print if master else (lambda *a, **k: None)
    if train_cfg.gradient_accumulation_steps % dist.world:
        raise GPTError(f"--gradient_accumulation_steps ({train_cfg.gradient_accumulation_steps}) must be a multiple "
                       f"of the number of processes ({dist.world}): the global batch is batch_size * "
                       "gradient_accumulation_steps; e.g. --gradient_accumulation_steps "
                       f"{dist.world * max(1, train_cfg.gradient_accumulation_steps // dist.world)}")
    micro_steps = train_cfg.gradient_accumulation_steps // dist.world
    out_dir = ensure_dir(args.out_dir) if master else Path(args.out_dir)

    text = load_text(args.data) if args.data else load_shakespeare(args.data_dir)
    if not text:
        raise GPTError(f"data file {args.data} is empty")
    tokenizer = CharTokenizer.from_text(text)
    model_cfg = ModelConfig(**{**mc, "vocab_size": tokenizer.vocab_size})
    ids = np.array(tokenizer.encode(text), dtype=np.uint16 if tokenizer.vocab_size < 65536 else np.int64)
    data_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    train_data, val_data = split(ids)
    block = model_cfg.block_size

    attention = args.attention or "sdpa"
    if attention == "triton" and device.type == "cpu":
        say("note: --attention triton on CPU runs in the Triton interpreter (TRITON_INTERPRET=1): slow, for tests")
    dtype = DTYPES.get(args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    scaler = grad_scaler(dtype, device)

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = GPT(model_cfg, attention=attention).to(device)
    if dist.enabled:
        torch.manual_seed(args.seed + dist.rank)  # each rank its own dropout stream (and batches, below)
    optimizer = torch.optim.AdamW(model.optimizer_groups(train_cfg.weight_decay), lr=train_cfg.learning_rate,
                                  betas=(train_cfg.beta1, train_cfg.beta2), fused=device.type == "cuda")
    train_sampler = BatchSampler(train_data, block, train_cfg.batch_size, seed=args.seed + dist.rank)
    BatchSampler(val_data, block, train_cfg.batch_size, seed=0)  # a too-small val split fails now, not at eval
    start_iter, best_val = 0, float("inf")
    log_path = out_dir / LOG
    if master:
        recover(out_dir)  # finish a checkpoint save a kill interrupted after its commit point
        remove_stale_temps(out_dir, (STATE, LOG, "loss.png"))
    if args.resume:
        state = load_state(out_dir / STATE, model, optimizer, model_cfg, device)
        start_iter, best_val = int(state["iter"]), float(state["best_val"])
        if scaler.is_enabled() and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        for note in changes(state, train_cfg, args.seed, data_sha256):
            say(f"note: {note}")
        if state["world_size"] == dist.world:
            set_rng_state(state["ranks"][dist.rank], train_sampler, device)
        else:
            say(f"note: {STATE} was saved by {state['world_size']} process(es), this run has {dist.world}: "
                "training continues, but with other batches than an uninterrupted run")
            train_sampler = BatchSampler(train_data, block, train_cfg.batch_size,
                                         seed=args.seed + dist.rank + 1_000_003 * start_iter)
            torch.manual_seed(args.seed + dist.rank + 1_000_003 * start_iter)
        del state
        if args.stop_after is not None and args.stop_after <= start_iter:
            raise GPTError(f"--stop-after {args.stop_after} is not past the resume iteration {start_iter}")
        if master:  # rows past the resume point were written after the state was saved: they are redone
            rows = [r for r in read_log(log_path) if r.get("iter", math.inf) < start_iter]
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))
        say(f"resuming from iteration {start_iter} (best val loss so far {best_val:.4f})")
    elif master:
        atomic_write_text(log_path, "")
    if args.compile is None:
        args.compile = device.type == "cuda"
    eval_model = torch.compile(model) if args.compile else model
    run = eval_model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        run = DistributedDataParallel(eval_model, device_ids=[device.index] if device.type == "cuda" else None)
    say(f"{model.num_params() / 1e6:.2f}M parameters, preset {args.preset}, {device.type}, attention {attention}, "
        f"compile {'on' if args.compile else 'off'}, {len(train_data):,} train / {len(val_data):,} val tokens"
        + (f", {dist.world} processes x {micro_steps} micro-steps" if dist.enabled else ""))

    def save_state(it: int) -> None:
        """train_state.pt as of the start of iteration `it` (every rank takes part; rank 0 writes)."""
        mine = rng_state(train_sampler, device)
        ranks = [mine]
        if dist.enabled:
            import torch.distributed as td

            ranks = [None] * dist.world
            td.all_gather_object(ranks, {k: v.cpu() if torch.is_tensor(v) else v for k, v in mine.items()})
        if not master:
            return
        state = {
            "version": STATE_VERSION, "iter": it, "best_val": best_val, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "model_config": model_cfg.to_dict(),
            "train_config": json.dumps(asdict(train_cfg)), "seed": args.seed, "world_size": dist.world,
            "data_sha256": data_sha256, "ranks": ranks, "scaler": scaler.state_dict(),  # {} when disabled
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(out_dir / STATE, buf.getvalue(), fault="before-state")
        fault_point("after-state")

    def evaluate(it: int) -> None:
        nonlocal best_val
        losses = estimate_loss(eval_model, {"train": train_data, "val": val_data}, train_cfg, block, device, amp,
                               args.seed)
        append_log(log_path, {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"],
                              "lr": lr_at(it, train_cfg), "time": time.time()})
        bar.write(f"iter {it}: train {losses['train']:.4f}, val {losses['val']:.4f}")
        if losses["val"] < best_val:
            best_val = losses["val"]
            save_checkpoint(out_dir, model, tokenizer, iter=it, val_loss=best_val, val_loss_kind="estimate")

    from tqdm import tqdm

    nan_at = fault_spec("nan-loss")
    tokens_per_iter = train_cfg.batch_size * block * train_cfg.gradient_accumulation_steps
    end_iter = min(train_cfg.max_iters, args.stop_after or train_cfg.max_iters)
    bar = tqdm(range(start_iter, end_iter), initial=start_iter, total=end_iter,
               disable=args.no_progress or not master, dynamic_ncols=True, file=sys.stdout)
    model.train()
    t0 = time.perf_counter()
    clip = train_cfg.grad_clip if train_cfg.grad_clip > 0 else math.inf
    for it in bar:
        if it % train_cfg.eval_interval == 0:
            if not (args.resume and it == start_iter):  # the state it was resumed from is this one
                save_state(it)
            if master:
                evaluate(it)
            t0 = time.perf_counter()
        lr = lr_at(it, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = []
        for micro in range(micro_steps):
            x, y = (torch.from_numpy(a).to(device, non_blocking=True) for a in train_sampler.next())
            sync = run.no_sync() if dist.enabled and micro < micro_steps - 1 else nullcontext()
            with sync:
                with amp:
                    _, loss = run(x, y)
                if it == nan_at:
                    loss = loss * float("nan")
                losses.append(loss.detach())
                scaler.scale(loss / micro_steps).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        # with loss scaling, inf/NaN gradients are expected now and then: scaler.step skips that step
        checked = losses if scaler.is_enabled() else [*losses, grad_norm.to(losses[0])]
        if not torch.isfinite(torch.stack(checked)).all().item():  # one sync per step
            bad = [v.item() for v in losses if not math.isfinite(v.item())]  # (grads are all-reduced: ranks agree)
            what = f"loss became {bad[0]}" if bad else f"gradient norm became {grad_norm.item()}"
            raise GPTError(f"{what} at iteration {it}: training stopped; the last good checkpoint in {out_dir} is "
                           "kept (try a lower --learning_rate)")
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if (it + 1) % train_cfg.log_interval == 0 and master:
            now = time.perf_counter()
            bar.set_postfix(loss=f"{loss.item():.4f}",
                            tok_s=f"{tokens_per_iter * train_cfg.log_interval / (now - t0):,.0f}")
            t0 = now
        if stop_requested(stop, dist, device):
            save_state(it + 1)
            bar.close()
            say(f"{stop.signal or 'SIGTERM'}: finished iteration {it}, saved state; continue with "
                f"`python -m gpt.train --out-dir {out_dir} --resume` and the same options")
            return 0
    bar.close()
    if end_iter > start_iter or not args.resume:
        save_state(end_iter)
    if end_iter < train_cfg.max_iters:
        say(f"stopped after iteration {end_iter} of {train_cfg.max_iters}; continue with --resume")
        return 0
    if not master:
        return 0
    evaluate(end_iter)
    best, _, manifest = load_checkpoint(out_dir, device=device)
    with amp:
        val = full_loss(best, val_data, block, device)
    save_checkpoint(out_dir, best, tokenizer, iter=manifest["iter"], val_loss=val, val_loss_kind="full pass",
                    val_loss_estimate=manifest.get("val_loss_estimate", manifest["val_loss"]))
    plot_losses(log_path, out_dir / "loss.png")
    print(f"done: best model (iteration {manifest['iter']}) has val loss {val:.4f} (full pass over "
          f"{len(val_data):,} tokens); saved to {out_dir}/model.safetensors")
    return 0


def stop_requested(stop: StopRequest, dist: Dist, device: torch.device) -> bool:
    """Whether any rank got SIGINT/SIGTERM (all ranks stop after the same step)."""
    if not dist.enabled:
        return stop.signal is not None
    import torch.distributed as td

    flag = torch.tensor([1.0 if stop.signal else 0.0], device=device)
    td.all_reduce(flag, op=td.ReduceOp.MAX)
    return bool(flag.item())


if __name__ == "__main__":
    run_cli(main)
