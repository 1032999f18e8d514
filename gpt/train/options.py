"""The command line of `python -m gpt.train`, resolved into one `Options` object that `train()` reads."""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from gpt.config import PRESETS, ModelConfig, TrainConfig, get_preset
from gpt.errors import ArgumentParser, GPTError
from gpt.model.attention import BACKENDS
from gpt.train.budget import parse_duration
from gpt.train.optim import OPTIMIZERS
from gpt.train.state import STATE

USAGE = """Train the GPT: `python -m gpt.train --preset cpu --out-dir out`.

Every field of the model and training config can be overridden the nanoGPT way, e.g.
`--n_layer 2 --batch_size 8` (dashed spellings such as `--batch-size 8` work too).

Writes to --out-dir: model.safetensors + config.json (the best-val model, for sampling), train_state.pt
(the latest state, for --resume: weights, optimizer, iteration, RNG states and data-sampler positions,
saved at every evaluation and on exit), log.jsonl (every evaluation) and loss.png (train/val curves).
Every file is replaced atomically; a kill at any instant leaves a loadable checkpoint and a resumable state.

`--resume` continues exactly where train_state.pt left off: on CPU, stopping (--stop-after N, Ctrl-C,
SIGTERM, kill -9) and resuming gives the same losses and weights, bit for bit, as one uninterrupted run.
Ctrl-C or SIGTERM finishes the current step, saves, and exits 0 (a second Ctrl-C aborts at once).

Optimizer: `--optimizer muon` (the cpu preset's) steps the blocks' matrices with Muon at `--muon_lr` and
everything else with AdamW at `--learning_rate`; `--optimizer adamw` uses AdamW for all (nanoGPT's).
Schedule: warmup, then `--lr_schedule wsd` (the cpu preset's) stays at the peak until the last
--decay_fraction of the run and falls linearly to --min_lr; `cosine` (the other presets') decays along a cosine.
`--ema_decay 0.99` evaluates and saves a moving average of the weights.
Precision: `--dtype auto` measures bfloat16 against float32 on this machine (see --dtype below).

Several GPUs or nodes: `torchrun --nproc_per_node=N -m gpt.train ... --gradient_accumulation_steps K`
(K a multiple of the number of processes: the global batch stays batch_size * K sequences).
"""

SCHEDULES = ("cosine", "wsd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.train", description=USAGE)
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
                   help="autocast dtype (auto: bfloat16 on CUDA; on a CPU bfloat16 only where it has AMX or "
                        "AVX512-BF16 and the two, timed in turns, measure it faster (checked again on the run's "
                        "own steps once its pace is steady), else float32; the "
                        "final val loss is always a float32 full pass)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--resume", action="store_true", help=f"continue from --out-dir/{STATE}")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop (saving state for --resume) after iteration N, keeping the schedule of max_iters")
    p.add_argument("--time-budget", metavar="DURATION",
                   help="end the whole run inside this wall time (90s, 8m, 1h): a deadline; max_iters becomes what "
                        "fits, planned again every 10 iterations from the recent pace, and the schedule decays over "
                        "it; 'off' to use max_iters (default: the preset's: cpu 8m, others off; an explicit "
                        "--max_iters turns the preset's budget off, with --time-budget it is a cap)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    group = p.add_argument_group("config overrides (defaults come from the preset)")
    for f in (*fields(ModelConfig), *fields(TrainConfig)):
        if f.name == "vocab_size":
            continue
        kind = parse_bool if f.type in (bool, "bool") else {"int": int, "float": float, "str": str}[str(f.type)]
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
    if t.lr_schedule not in SCHEDULES:
        raise GPTError(f"--lr_schedule must be one of {', '.join(SCHEDULES)}, got {t.lr_schedule!r}")
    if not 0 < t.decay_fraction <= 1:
        raise GPTError(f"--decay_fraction must be in (0, 1], got {t.decay_fraction}")
    if t.optimizer not in OPTIMIZERS:
        raise GPTError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {t.optimizer!r}")
    for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "muon_lr"):
        value = getattr(t, name)
        if not (math.isfinite(value) and value >= 0):
            raise GPTError(f"--{name} must be a finite number >= 0, got {value}")
    for name in ("beta1", "beta2", "ema_decay"):
        if not 0 <= getattr(t, name) < 1:
            raise GPTError(f"--{name} must be in [0, 1), got {getattr(t, name)}")
    if args.stop_after is not None and args.stop_after < 1:
        raise GPTError(f"--stop-after must be >= 1, got {args.stop_after}")


@dataclass
class Options:
    """One run, resolved from the command line: `train()` reads nothing else."""

    out_dir: Path
    data: Path | None  # None: Tiny Shakespeare from data_dir
    data_dir: Path
    preset: str
    model: dict  # ModelConfig fields; vocab_size comes from the data
    train: TrainConfig
    attention: str
    device: torch.device
    dtype: torch.dtype | None  # autocast dtype (float32: no autocast; None: gpt.train.precision decides)
    compile: bool
    seed: int
    resume: bool
    stop_after: int | None
    progress: bool
    time_budget: float | None = None  # seconds for the whole run, from `started`
    max_iters_cap: int | None = None  # an explicit --max_iters beside a time budget
    started: float = 0.0  # time.perf_counter() at main()


def configs(args: argparse.Namespace) -> tuple[dict, TrainConfig, float | None]:
    """The preset with the command line's overrides, validated (before any data is read), and the time budget."""
    preset = get_preset(args.preset)
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    mc, tc = asdict(preset.model), asdict(preset.train)
    for k, v in overrides.items():
        (mc if k in mc else tc)[k] = v
    if "max_iters" in overrides and "lr_decay_iters" not in overrides:
        tc["lr_decay_iters"] = tc["max_iters"]
    train_cfg = TrainConfig(**tc)
    validate(train_cfg, args)
    ModelConfig(**{**mc, "vocab_size": 1})  # shape errors now
    budget = args.time_budget or (None if "max_iters" in overrides else preset.time_budget)
    return mc, train_cfg, None if budget in (None, "off") else parse_duration(budget)
