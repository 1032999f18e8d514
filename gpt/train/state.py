"""train_state.pt: everything `--resume` needs to continue a run bit for bit (weights, optimizer, loss
scaler, iteration, best val loss, and every RNG and data-sampler position of every rank), written
atomically and read with weights_only=True (no pickled code runs)."""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gpt.config import ModelConfig, TrainConfig
from gpt.data import BatchSampler
from gpt.errors import GPTError
from gpt.fsutil import atomic_write_bytes, fault_point
from gpt.model import GPT
from gpt.train.distributed import Dist
from gpt.train.ema import WeightEMA

STATE = "train_state.pt"
STATE_VERSION = 2


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


def write_state(path: Path, *, it: int, best_val: float, model: GPT, optimizer, scaler, train_cfg: TrainConfig,
                seed: int, data_sha256: str, ranks: list[dict], plan: dict, dtype: str,
                ema: WeightEMA | None = None) -> None:
    """The state as of the start of iteration `it`; `ranks` holds every rank's rng_state; `plan` is a time
    budget's latest plan ({"seconds", "max_iters", "progress"}; {} without one): a resume finishes that plan,
    in the autocast `dtype` the run had."""
    state = {
        "version": STATE_VERSION, "iter": it, "best_val": best_val, "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "model_config": model.config.to_dict(),
        "train_config": json.dumps(asdict(train_cfg)), "seed": seed, "world_size": len(ranks),
        "data_sha256": data_sha256, "ranks": ranks, "dtype": dtype, "scaler": scaler.state_dict(),  # {} when disabled
        "time_budget": plan,
        "ema": ema.state_dict() if ema else {},
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue(), fault="before-state")
    fault_point("after-state")


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


def resume(path: Path, model: GPT, optimizer, scaler, sampler: BatchSampler, train_cfg: TrainConfig, seed: int,
           data_sha256: str, dist: Dist, device: torch.device, ema: WeightEMA | None = None
           ) -> tuple[int, float, list[str], dict, str | None]:
    """Load train_state.pt into the run. Returns the iteration to start at, the best val loss so far, notes to
    print, the time budget's plan ({"max_iters", "progress"}, or {} when the run had none) and the autocast
    dtype the run trained in (None in states saved before it was recorded)."""
    state = load_state(path, model, optimizer, model.config, device)
    if ema:
        if not state.get("ema"):
            raise GPTError(f"--resume: {path} has no moving average of the weights; resume without --ema_decay "
                           "(or start the run again with it)")
        ema.load_state_dict(state["ema"])
    start_iter, best_val = int(state["iter"]), float(state["best_val"])
    plan = dict(state.get("time_budget") or {})
    if plan and "progress" not in plan:  # saved before the schedule followed the plan: the line it was on
        plan["progress"] = min(1.0, max(0.0, (start_iter - train_cfg.warmup_iters)
                                        / max(1, int(plan["lr_decay_iters"]) - train_cfg.warmup_iters)))
    if scaler.is_enabled() and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    notes = changes(state, train_cfg, seed, data_sha256)
    if state["world_size"] == dist.world:
        set_rng_state(state["ranks"][dist.rank], sampler, device)
    else:
        notes.append(f"{STATE} was saved by {state['world_size']} process(es), this run has {dist.world}: "
                     "training continues, but with other batches than an uninterrupted run")
        sampler.reseed(seed + dist.rank + 1_000_003 * start_iter)
        torch.manual_seed(seed + dist.rank + 1_000_003 * start_iter)
    return start_iter, best_val, notes, plan, state.get("dtype")
