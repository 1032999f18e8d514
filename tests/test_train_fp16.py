"""fp16 loss scaling in gpt.train (torch.amp.GradScaler).

The scaler is only enabled for fp16 on CUDA; without a GPU, these tests swap in an enabled CPU GradScaler
(CPU autocast supports fp16) to check the plumbing: scale, unscale before clipping, step, update, and the
scaler state saved in train_state.pt and restored by --resume.
"""

from __future__ import annotations

import torch
from conftest import TINY

from gpt.train import loop as train


class RecordingScaler(torch.amp.GradScaler):
    """A CPU GradScaler that logs the calls the training loop makes."""

    def __init__(self):
        super().__init__("cpu", init_scale=2.0**10, growth_interval=1)
        self.calls: list[str] = []
        self.loaded: dict | None = None

    def scale(self, outputs):
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer):
        self.calls.append("unscale_")
        super().unscale_(optimizer)

    def step(self, optimizer, *args, **kwargs):
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        self.calls.append("update")
        super().update(new_scale)

    def load_state_dict(self, state_dict):
        self.loaded = dict(state_dict)
        super().load_state_dict(state_dict)


def test_scaler_enabled_only_for_fp16_on_cuda():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert not train.grad_scaler(torch.float16, cpu).is_enabled()
    assert not train.grad_scaler(torch.bfloat16, cuda).is_enabled()
    assert not train.grad_scaler(torch.float32, cuda).is_enabled()
    if torch.cuda.is_available():
        assert train.grad_scaler(torch.float16, cuda).is_enabled()


def test_fp16_training_scales_steps_saves_and_resumes(tmp_path, periodic_text_file, monkeypatch):
    scalers: list[RecordingScaler] = []

    def make(dtype, device):
        assert dtype == torch.float16
        scalers.append(RecordingScaler())
        return scalers[-1]

    monkeypatch.setattr(train, "grad_scaler", make)
    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--device", "cpu",
            "--dtype", "float16", "--max_iters", "6", "--eval_interval", "3", "--gradient_accumulation_steps", "2",
            "--optimizer", "muon"]
    assert train.main([*args, "--stop-after", "3"]) == 0
    # 2 micro-steps per step; both optimizers (AdamW and Muon) unscaled and stepped through the scaler
    assert scalers[0].calls == ["scale", "scale", "unscale_", "unscale_", "step", "step", "update"] * 3
    saved = torch.load(tmp_path / train.STATE, weights_only=True)["scaler"]
    assert saved["scale"] == scalers[0].get_scale() and saved["_growth_tracker"] == scalers[0]._get_growth_tracker()

    assert train.main([*args, "--resume"]) == 0
    assert scalers[1].loaded == saved
    assert scalers[1].calls.count("step") == 2 * 3
