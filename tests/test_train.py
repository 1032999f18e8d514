import json

import torch
from conftest import TINY, run_module

from gpt.checkpoint import load_checkpoint
from gpt.config import ModelConfig, TrainConfig
from gpt.model import GPT
from gpt.train import build_parser, lr_at


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss_and_writes_every_artifact(tiny_ckpt, periodic_text_file):
    log = read_log(tiny_ckpt)
    assert log[0]["iter"] == 0 and log[-1]["iter"] == 300
    assert log[-1]["val_loss"] < 0.5 * log[0]["val_loss"]
    manifest = json.loads((tiny_ckpt / "config.json").read_text())
    assert manifest["val_loss_kind"] == "full pass" and manifest["val_loss"] < 1.0
    assert manifest["vocab"] == sorted(set(periodic_text_file.read_text()))
    assert (tiny_ckpt / "loss.png").stat().st_size > 1000
    assert (tiny_ckpt / "train_state.pt").is_file()


def test_compiled_training_lowers_the_loss_and_matches_eager(tmp_path, periodic_text_file):
    r = run_module("gpt.train", "--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY,
                   "--compile", "--max_iters", "40", "--eval_interval", "20")
    assert r.returncode == 0, r.stderr
    assert "compile on" in r.stdout
    log = read_log(tmp_path)
    assert log[-1]["train_loss"] < log[0]["train_loss"] - 0.5
    model, _, _ = load_checkpoint(tmp_path)
    compiled = torch.compile(model)
    idx = torch.randint(0, model.config.vocab_size, (2, model.config.block_size))
    with torch.no_grad():
        assert (compiled(idx)[0] - model(idx)[0]).abs().max().item() <= 1e-5


def test_config_fields_override_with_either_spelling():
    args = build_parser().parse_args(["--n_layer", "3", "--batch-size", "7", "--bias", "false"])
    assert (args.cfg_n_layer, args.cfg_batch_size, args.cfg_bias) == (3, 7, False)


def test_learning_rate_warms_up_then_decays_to_min():
    t = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=100)
    assert lr_at(0, t) < lr_at(9, t) < 1.0
    assert abs(lr_at(10, t) - 1.0) < 1e-9 and abs(lr_at(100, t) - 0.1) < 1e-9 and lr_at(500, t) == 0.1
    assert lr_at(40, t) > lr_at(60, t)


def test_dropout_only_in_training_mode():
    model = GPT(ModelConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.5))
    idx = torch.randint(0, 10, (1, 8))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])
