"""Model and training configuration, with the named presets. Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from gpt.errors import GPTError


@dataclass
class ModelConfig:
    vocab_size: int = 65
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    bias: bool = True  # biases in the Linears and LayerNorms (GPT-2); nanoGPT's default is False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise GPTError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise GPTError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise GPTError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Every field is required except `bias`, which files written before it existed lack (they had biases)."""
        d = {"bias": True, **d}
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d))
        if missing:
            raise GPTError(f"model config is missing field(s): {', '.join(missing)}")
        return cls(**{k: d[k] for k in names})


@dataclass
class TrainConfig:
    batch_size: int = 64
    max_iters: int = 5000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 5000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 200
    log_interval: int = 10
    gradient_accumulation_steps: int = 1
    optimizer: str = "adamw"  # or "muon": Muon for the blocks' matrices, AdamW for the rest (gpt/train/optim.py)
    muon_lr: float = 6e-3  # Muon's peak rate (AdamW-matched scale); the schedule scales it like learning_rate
    lr_schedule: str = "cosine"  # or "wsd": warmup, stable at the peak, then a linear decay (gpt/train/schedule.py)
    decay_fraction: float = 0.3  # wsd: the share of lr_decay_iters spent decaying to min_lr
    ema_decay: float = 0.0  # > 0: evaluate and save a moving average of the weights instead (gpt/train/ema.py)


@dataclass
class Preset:
    model: ModelConfig
    train: TrainConfig
    description: str
    time_budget: str | None = None  # when set, the run's max_iters is what fits this wall-clock time


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        ModelConfig(block_size=256, n_layer=4, n_head=4, n_embd=192, dropout=0.0),  # bench.recipes chose 256 x 16
        TrainConfig(batch_size=16, max_iters=2000, learning_rate=2e-3, min_lr=2e-5, warmup_iters=100,
                    lr_decay_iters=2000, eval_interval=250, eval_iters=20, optimizer="muon", muon_lr=1e-2,
                    lr_schedule="wsd", decay_fraction=0.3),  # bench.recipes --iters 1332 chose wsd to 2e-5
        "trains on 2 CPU cores in 8 minutes, whichever CPU (max_iters is what fits: --time-budget), with Muon "
        "and a warmup-stable-decay schedule",
        time_budget="8m",
    ),
    "shakespeare": Preset(
        ModelConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2),
        TrainConfig(),
        "nanoGPT's train_shakespeare_char (6x384), for a GPU",
    ),
    "large": Preset(
        ModelConfig(block_size=256, n_layer=12, n_head=12, n_embd=768, dropout=0.2),
        TrainConfig(),
        "the founding configuration (12x768), for a GPU",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise GPTError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    p = PRESETS[name]
    return Preset(ModelConfig(**asdict(p.model)), TrainConfig(**asdict(p.train)), p.description, p.time_budget)
