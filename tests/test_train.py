import json

import pytest
import torch
from conftest import TINY, read_log, run_module

from gpt.config import ModelConfig, TrainConfig
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint
from gpt.train.loop import build_parser
from gpt.train.schedule import lr_at


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


def test_wsd_holds_the_peak_then_decays_in_a_straight_line():
    t = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_iters=10, lr_decay_iters=110, lr_schedule="wsd",
                    decay_fraction=0.25)
    assert lr_at(0, t) < lr_at(9, t) < 1.0
    assert lr_at(10, t) == lr_at(50, t) == lr_at(85, t) == 1.0  # stable until the last quarter (85..110)
    assert lr_at(95, t) == pytest.approx(0.64) and lr_at(110, t) == pytest.approx(0.1) and lr_at(500, t) == 0.1


def test_dropout_only_in_training_mode():
    model = GPT(ModelConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0.5))
    idx = torch.randint(0, 10, (1, 8))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


def test_evaluations_do_not_change_what_training_draws(tmp_path, periodic_text_file, one_torch_thread):
    """Evaluation draws from RNGs of its own: with dropout on, a run evaluating every 4 iterations ends with
    the weights, optimizer state, data position and torch RNG of one evaluating only at its start and end."""
    from gpt.train.loop import main

    ends = []
    for every in (4, 16):
        out = tmp_path / f"every-{every}"
        main(["--data", str(periodic_text_file), "--out-dir", str(out), *TINY, "--dropout", "0.1",
              "--max_iters", "16", "--eval_interval", str(every)])
        assert len(read_log(out)) == 1 + 16 // every
        ends.append(torch.load(out / "train_state.pt", weights_only=True))
    a, b = ends
    assert a["ranks"][0]["sampler"] == b["ranks"][0]["sampler"]
    assert torch.equal(a["ranks"][0]["torch"], b["ranks"][0]["torch"])
    for name, weight in a["model"].items():
        assert torch.equal(weight, b["model"][name]), name
    for part_a, part_b in zip(a["optimizer"], b["optimizer"], strict=True):
        for i, moments in part_a["state"].items():
            assert all(torch.equal(v, part_b["state"][i][k]) for k, v in moments.items()), i


def test_a_global_batch_the_processes_cannot_share_is_refused(tmp_path, periodic_text_file, monkeypatch):
    """The global batch is batch_size x gradient_accumulation_steps whatever the number of processes: 3
    accumulation steps do not split over 2 processes (1 each would train on 2/3 of the batch asked for)."""
    import gpt.train.loop
    from gpt.errors import GPTError
    from gpt.train.distributed import Dist

    monkeypatch.setattr(gpt.train.loop, "setup_distributed", lambda name: (Dist(0, 0, world=2), torch.device("cpu")))
    with pytest.raises(GPTError, match=r"--gradient_accumulation_steps \(3\) must be a multiple of the number of "
                                       r"processes \(2\).*--gradient_accumulation_steps 2$"):
        gpt.train.loop.main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "2",
                        "--gradient_accumulation_steps", "3"])
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_cpu_without_bf16_trains_in_float32_and_says_so(tmp_path, periodic_text_file, monkeypatch, capsys):
    """/proc/cpuinfo is asked once, for the probe and the recheck alike."""
    import gpt.train.loop

    asked = []
    monkeypatch.setattr(gpt.train.loop, "bf16_hardware", lambda: asked.append("cpuinfo"))  # None: no bf16 unit
    gpt.train.loop.main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "2",
                         "--dtype", "auto"])
    assert asked == ["cpuinfo"]
    first = capsys.readouterr().out.splitlines()[0]
    assert "float32 (this CPU has no AMX or AVX512-BF16: bfloat16 would be emulated, slowly)" in first
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["dtype"] == "float32"


def test_a_resume_keeps_the_dtype_auto_chose_without_probing_again(tmp_path, periodic_text_file, monkeypatch,
                                                                   capsys):
    import gpt.train.loop

    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "4", "--dtype", "auto"]
    monkeypatch.setattr(gpt.train.loop, "choose_dtype", lambda *a: (torch.bfloat16, "bfloat16 autocast (probed)"))
    gpt.train.loop.main([*args, "--stop-after", "2"])
    monkeypatch.setattr(gpt.train.loop, "choose_dtype", lambda *a: (torch.float32, "float32 (probed again)"))
    gpt.train.loop.main([*args, "--resume"])
    resumed = capsys.readouterr().out.split("resuming from iteration 2")[1]
    assert "bfloat16 (as the run started)" in resumed and "probed again" not in resumed
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["dtype"] == "bfloat16"


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [(2.0, 1.0, torch.bfloat16), (1.0, 1.0, torch.float32),
                                                    (1.0, 19.0, torch.float32)])
def test_the_probe_picks_bf16_only_when_measured_faster(monkeypatch, fp32_s, bf16_s, chosen):
    from gpt.train import precision

    monkeypatch.setattr(precision, "interleaved_medians", lambda fns, rounds: [fp32_s, bf16_s])
    dtype, why = precision.choose_dtype(GPT(ModelConfig(block_size=8, n_layer=1, n_head=1, n_embd=8)), 2,
                                        torch.device("cpu"), "AMX")
    assert dtype == chosen and f"measured {fp32_s / bf16_s:.2f}x float32 on this CPU's AMX" in why


def test_the_probe_takes_turns_so_a_busy_spell_touches_both_precisions():
    """Two candidates that cost the same, while the machine is busy (5x slower) for the first four calls: timed
    one after the other, the first would measure busy and the second quiet; taking turns, both measure quiet."""
    import time

    from gpt.train.precision import PROBE_ROUNDS, interleaved_medians

    calls = []

    def candidate():
        calls.append(None)
        time.sleep(0.01 * (5 if len(calls) <= 4 else 1))

    a, b = interleaved_medians([candidate, candidate], PROBE_ROUNDS)
    assert len(calls) == 2 * (PROBE_ROUNDS + 1) and 0.6 < a / b < 1.6 and max(a, b) < 0.03


def test_the_probe_leaves_the_run_as_it_was():
    """The probe's real timing steps draw no torch random numbers the run would see and leave no gradients."""
    from gpt.train import precision

    model = GPT(ModelConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    before = torch.get_rng_state()
    precision.choose_dtype(model, 2, torch.device("cpu"), "AMX")
    assert torch.equal(torch.get_rng_state(), before) and all(p.grad is None for p in model.parameters())


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from dataclasses import replace

    from gpt.train.optim import Optimizers

    model = GPT(ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8))
    adamw, muon = Optimizers(model, replace(TrainConfig(), optimizer="muon", muon_lr=0.02)).parts
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert in_muon.isdisjoint(in_adamw) and in_muon | in_adamw == {id(p) for p in model.parameters()}
    assert in_muon == {id(p) for p in model.h.parameters() if p.dim() == 2}
    assert id(model.wte.weight) in in_adamw  # the embedding (and the head tied to it) is not a hidden matrix
    opts = Optimizers(model, replace(TrainConfig(), optimizer="muon", muon_lr=0.02, learning_rate=1e-3))
    opts.set_lr(5e-4)  # the schedule's value: Muon's rate follows it at muon_lr / learning_rate
    assert [g["lr"] for g in opts.parts[1].param_groups] == [pytest.approx(1e-2)]
    assert {g["lr"] for g in opts.parts[0].param_groups} == {5e-4}


@pytest.mark.parametrize("loss, grad_norm, message", [(float("inf"), 1.0, "loss became inf at iteration 7"),
                                                     (1.0, float("inf"), "gradient norm became inf at iteration 7"),
                                                     (1.0, float("nan"), "gradient norm became nan at iteration 7")])
def test_a_non_finite_loss_or_gradient_norm_stops_training(tmp_path, loss, grad_norm, message):
    from gpt.errors import GPTError
    from gpt.train.loop import check_finite, grad_scaler

    scaler = grad_scaler(torch.float32, torch.device("cpu"))
    with pytest.raises(GPTError, match=message):
        check_finite([torch.tensor(loss)], torch.tensor(grad_norm), scaler, 7, tmp_path)
    check_finite([torch.tensor(1.0)], torch.tensor(1.0), scaler, 7, tmp_path)  # finite: no error


def test_the_reported_val_loss_is_an_independent_full_pass(shakespeare_ckpt, shakespeare_slice):
    """config.json's val loss (what gpt.train prints) = this test's own pass over the val split of real text:
    every next-character prediction once, one window at a time, a float64 log-softmax of the model's logits."""
    import numpy as np
    import torch.nn.functional as F

    model, tokenizer, manifest = load_checkpoint(shakespeare_ckpt)
    ids = np.asarray(tokenizer.encode(shakespeare_slice.read_text()))
    val, block = ids[int(len(ids) * 0.9):], model.config.block_size
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val) - 1, block):
            window = torch.from_numpy(val[start:start + block + 1].astype(np.int64))
            logits = model(window[None, :-1])[0][0].double()
            total += F.cross_entropy(logits, window[1:], reduction="sum").item()
            count += len(window) - 1
    assert manifest["val_loss_kind"] == "full pass" and count == len(val) - 1
    assert abs(manifest["val_loss"] - total / count) < 1e-5, (manifest["val_loss"], total / count)
    assert manifest["val_loss"] < 3.0  # it learnt something: uniform over the vocabulary is ln(V) ~ 4


def test_our_muon_is_torchs_muon_and_runs_in_float32_too():
    """gpt/train/muon.py with a bfloat16 iteration = torch.optim.Muon ("match_rms_adamw"), bit for bit over three
    steps; in float32 its orthogonalized update has every singular value near 1."""
    from gpt.train.muon import Muon, orthogonalize

    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(n, m) * 0.02) for n, m in ((24, 72), (96, 24))]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a = Muon(ours, lr=1e-2, weight_decay=0.1, ns_dtype=torch.bfloat16)
    b = torch.optim.Muon(theirs, lr=1e-2, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    singular = torch.linalg.svdvals(orthogonalize(torch.randn(24, 72), dtype=torch.float32))
    assert 0.6 < singular.min() and singular.max() < 1.3


def test_word_coverage_counts_the_sample_words_found_in_the_corpus():
    """bench.quality's second number: lower-cased words (inner apostrophes kept), each occurrence counted."""
    from bench.quality import word_coverage
    from gpt.errors import GPTError

    corpus = "ROMEO: O, she doth teach the torches to burn bright! 'Tis but thy name."
    assert word_coverage("Romeo doth teach thee; 'tis grath grath", corpus) == (4 / 7, 7)
    with pytest.raises(GPTError, match="no words"):
        word_coverage("!? 12 --", corpus)
