"""out/ holds the best-val model: model.safetensors + config.json are the evaluation with the lowest val loss,
not the latest, and `--resume` keeps the best so far. The val loss is scripted (it falls, then rises), so which
evaluation is best does not hang on training dynamics."""

from __future__ import annotations

import json
from collections.abc import Iterator

import torch
from conftest import TINY

import gpt.train.loop
from gpt.model.checkpoint import load_checkpoint

ARGS = [*TINY, "--max_iters", "16", "--eval_interval", "4", "--optimizer", "adamw"]


def scripted_val(vals: list[float], weights: dict[int, dict[str, torch.Tensor]]):
    """An estimate_loss whose n-th call returns vals[n] as the val loss and records the weights it evaluated."""
    it: Iterator[float] = iter(vals)

    def estimate(model, splits, *args, **kwargs) -> dict[str, float]:
        weights[len(weights)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {"train": 1.0, "val": next(it)}

    return estimate


def test_out_holds_the_best_evaluation_and_resume_keeps_it(tmp_path, periodic_text_file, monkeypatch):
    """Evaluations at iterations 0, 4, 8 | stop at 10, resume | 12, 16: the val loss 3.0, 1.0, 2.0 | 1.5, 2.5
    is lowest at iteration 4, and after it the weights keep changing."""
    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *ARGS]
    seen: dict[int, dict[str, torch.Tensor]] = {}
    monkeypatch.setattr(gpt.train.loop, "estimate_loss", scripted_val([3.0, 1.0, 2.0], seen))
    assert gpt.train.loop.main([*args, "--stop-after", "10"]) == 0
    assert json.loads((tmp_path / "config.json").read_text())["iter"] == 4
    monkeypatch.setattr(gpt.train.loop, "estimate_loss", scripted_val([1.5, 2.5], seen))
    assert gpt.train.loop.main([*args, "--resume"]) == 0
    at = dict(zip([0, 4, 8, 12, 16], seen.values(), strict=True))  # the iterations evaluated, in order
    manifest = json.loads((tmp_path / "config.json").read_text())
    assert manifest["iter"] == 4 and manifest["val_loss_estimate"] == 1.0 and manifest["val_loss_kind"] == "full pass"
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["best_val"] == 1.0
    saved = load_checkpoint(tmp_path)[0].state_dict()
    assert not torch.equal(at[4]["wte.weight"], at[16]["wte.weight"])  # the last weights differ from the best
    for k, v in saved.items():
        assert torch.equal(v, at[4][k]), k
