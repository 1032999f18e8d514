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


def test_time_budget_arithmetic():
    from gpt.time_budget import SAFETY, parse_duration, plan_iters

    assert [parse_duration(s) for s in ("90s", "8m", "1.5h", "300")] == [90, 480, 5400, 300]
    # 100 s x SAFETY, 10 s gone, 4 s for the end; each iteration 0.1 s + a 2 s evaluation every 10
    expected = 20 + (100 * SAFETY - 10 - 4) / 0.3
    assert abs(plan_iters(100, 10, 0.1, 2.0, 10, 20, 4.0) - expected) <= 1
    assert plan_iters(5, 10, 0.1, 2.0, 10, 20, 4.0) == 20  # already over: stop at once, never go back


def test_time_budget_decides_max_iters_once_and_resume_keeps_it(tmp_path, periodic_text_file):
    """The decision (after warm-up + calibration steps) is printed, logged and saved; a resume continues
    that schedule to its end without measuring again."""
    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "12s",
            "--eval_interval", "10"]
    first = run_module("gpt.train", *args, "--stop-after", "14")  # the decision comes after 13 steps
    assert first.returncode == 0, first.stderr[-2000:]
    decided = [line for line in first.stdout.splitlines() if line.startswith("time budget 12 s: ")]
    assert len(decided) == 1, first.stdout
    n = int(decided[0].split(": ")[1].split()[0].replace(",", ""))
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["time_budget"]["max_iters"] == n == json.loads(state["train_config"])["max_iters"]
    assert state["iter"] == 14 < n
    second = run_module("gpt.train", *args, "--resume")
    assert second.returncode == 0, second.stderr[-2000:]
    assert "time budget" not in second.stdout
    log = read_log(tmp_path)
    assert log[-1]["iter"] == n and {row["max_iters"] for row in log if row["iter"] >= 14} == {n}
