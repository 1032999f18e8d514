import json

import pytest
import torch
from conftest import TINY, run_module

from gpt.checkpoint import load_checkpoint
from gpt.config import ModelConfig, TrainConfig
from gpt.model import GPT
from gpt.train import build_parser, lr_at

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # tiny models: faster on one thread, and steady on a busy machine


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def one_torch_thread():
    """ONE_THREAD for a run in this process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_time_budget_arithmetic():
    from gpt.time_budget import SAFETY, parse_duration, plan_iters

    assert [parse_duration(s) for s in ("90s", "8m", "1.5h", "300")] == [90, 480, 5400, 300]
    # 100 s x SAFETY, 10 s gone, 4 s for the end; each iteration 0.1 s + a 2 s evaluation every 10
    expected = 20 + (100 * SAFETY - 10 - 4) / 0.3
    assert abs(plan_iters(100, 10, 0.1, 2.0, 10, 20, 4.0) - expected) <= 1
    assert plan_iters(5, 10, 0.1, 2.0, 10, 20, 4.0) == 20  # already over: stop at once, never go back


def test_time_budget_decides_max_iters_once_and_resume_keeps_it(tmp_path, periodic_text_file):
    """The decision (after warm-up + calibration steps) is printed, logged and saved; a resume continues
    that schedule to its end without measuring again, and the learning rate decays over exactly those
    iterations (the cpu preset's own 2,000 would leave it near its peak at the end)."""
    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "12s",
            "--eval_interval", "10"]
    first = run_module("gpt.train", *args, "--stop-after", "26", env=ONE_THREAD)  # decided after 25 steps
    assert first.returncode == 0, first.stderr[-2000:]
    decided = [line for line in first.stdout.splitlines() if line.startswith("time budget 12 s: ")]
    assert len(decided) == 1, first.stdout
    n = int(decided[0].split(": ")[1].split()[0].replace(",", ""))
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["time_budget"]["max_iters"] == n == json.loads(state["train_config"])["max_iters"]
    assert state["time_budget"]["lr_decay_iters"] == n == json.loads(state["train_config"])["lr_decay_iters"]
    assert state["iter"] == 26 < n
    second = run_module("gpt.train", *args, "--resume", env=ONE_THREAD)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "time budget" not in second.stdout
    log = read_log(tmp_path)
    assert log[-1]["iter"] == n and {row["max_iters"] for row in log if row["iter"] >= 26} == {n}
    assert log[-1]["lr"] == pytest.approx(3e-4)  # TINY's --min_lr, reached at the last iteration


def test_an_explicit_max_iters_turns_the_preset_budget_off_and_caps_a_given_one(tmp_path, periodic_text_file,
                                                                                 capsys):
    from gpt.train import main
    from gpt.train_options import configs

    assert configs(build_parser().parse_args(["--preset", "cpu"]))[2] == 480  # the preset's 8 minutes
    assert configs(build_parser().parse_args(["--preset", "cpu", "--max_iters", "7"]))[2] is None
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "10s",
          "--max_iters", "30", "--eval_interval", "100"])
    assert "time budget 10 s: 30 iterations" in capsys.readouterr().out and read_log(tmp_path)[-1]["iter"] == 30


def test_the_budget_takes_the_median_step_so_a_stall_does_not_shrink_the_run():
    """Five warm-up steps (untimed), then twenty timed ones, two of them stalled 30x: the plan uses 0.1 s."""
    from gpt.time_budget import CALIBRATION_STEPS, WARMUP_STEPS, BudgetPlanner, plan_iters

    planner = BudgetPlanner(100, started=0.0, eval_interval=10, final_factor=2)
    planner.observe_eval(2.0)
    steps = [1.0] * WARMUP_STEPS + [0.1] * (CALIBRATION_STEPS - 2) + [3.0, 3.0]
    planned = [planner.observe_step(s, i + 1, 10.0, 0.0) for i, s in enumerate(steps)]
    assert planned[:-1] == [None] * (len(steps) - 1) and planner.step_s == 0.1
    assert planned[-1] == plan_iters(100, 10.0, 0.1, 2.0, 10, len(steps), 4.0)


def test_the_plan_is_redone_from_the_pace_the_run_kept():
    """Decided at iteration 25 from 0.1 s steps; the next 100 steps took 0.2 s each (and one 2 s evaluation):
    at iteration 125 the plan is redone with 0.2 s, the evaluation about to run and the final one counted."""
    from gpt.time_budget import CALIBRATION_STEPS, WARMUP_STEPS, BudgetPlanner, plan_iters

    planner = BudgetPlanner(100, started=0.0, eval_interval=10, final_factor=2)
    assert planner.replan(10, 5.0) is None  # nothing decided yet
    planner.observe_eval(2.0)
    steps = [0.1] * (WARMUP_STEPS + CALIBRATION_STEPS)
    first = [planner.observe_step(s, i + 1, 10.0, 0.0) for i, s in enumerate(steps)][-1]
    assert first == plan_iters(100, 10.0, 0.1, 2.0, 10, 25, 4.0)
    assert planner.replan(25, 10.0) is None  # not a step since the decision
    planner.observe_eval(2.0)
    assert planner.replan(125, 10.0 + 100 * 0.2 + 2.0) == plan_iters(100, 32.0, 0.2, 2.0, 10, 125, 2.0 * 3)
    assert planner.step_s == pytest.approx(0.2)


def test_a_calibration_in_a_fast_phase_does_not_make_the_run_overrun(tmp_path, periodic_text_file, monkeypatch,
                                                                      capsys, one_torch_thread):
    """A shared machine's pace drifts: here the calibration is told its steps took a third of their time, so the
    first plan is about three times too long; re-planned at each evaluation, the run still ends in its budget
    (without the re-plans it took about 15 s), and the state holds the count it ran."""
    import time

    from gpt import time_budget
    from gpt.train import main

    observe = time_budget.BudgetPlanner.observe_step
    monkeypatch.setattr(time_budget.BudgetPlanner, "observe_step", lambda self, s, *a: observe(self, s / 3, *a))
    start = time.perf_counter()
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "6s",
          "--eval_interval", "20"])
    wall = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "re-planned from" in out and wall <= 9, (wall, out[-800:])
    n = torch.load(tmp_path / "train_state.pt", weights_only=True)["time_budget"]["max_iters"]
    assert read_log(tmp_path)[-1]["iter"] == n and f"time budget 6 s: {n:,} iterations (re-planned from" in out


def test_evaluations_do_not_change_what_training_draws(tmp_path, periodic_text_file, one_torch_thread):
    """Evaluation draws from RNGs of its own: with dropout on, a run evaluating every 4 iterations ends with
    the weights, optimizer state, data position and torch RNG of one evaluating only at its start and end."""
    from gpt.train import main

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
    import gpt.train
    from gpt.distributed import Dist
    from gpt.errors import GPTError

    monkeypatch.setattr(gpt.train, "setup_distributed", lambda name: (Dist(0, 0, world=2), torch.device("cpu")))
    with pytest.raises(GPTError, match=r"--gradient_accumulation_steps \(3\) must be a multiple of the number of "
                                       r"processes \(2\).*--gradient_accumulation_steps 2$"):
        gpt.train.main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "2",
                        "--gradient_accumulation_steps", "3"])
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_a_five_second_budget_ends_in_four_to_eight_seconds(tmp_path, periodic_text_file, capsys):
    """Timed from main() (after the imports a user waits for once): warm-up, calibration, evaluations, the
    final full pass and the saves all fit; the decided max_iters is in the log and the state."""
    import time

    from gpt.train import main

    start = time.perf_counter()
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--time-budget", "5s",
          "--eval_interval", "100"])
    wall = time.perf_counter() - start
    assert 4 <= wall <= 8, wall
    n = torch.load(tmp_path / "train_state.pt", weights_only=True)["time_budget"]["max_iters"]
    assert read_log(tmp_path)[-1]["iter"] == n and f"time budget 5 s: {n:,} iterations" in capsys.readouterr().out


def test_a_cpu_without_bf16_trains_in_float32_and_says_so(tmp_path, periodic_text_file, monkeypatch, capsys):
    from gpt import precision
    from gpt.train import main

    monkeypatch.setattr(precision, "bf16_hardware", lambda: None)
    main(["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "2", "--dtype", "auto"])
    first = capsys.readouterr().out.splitlines()[0]
    assert "float32 (this CPU has no AMX or AVX512-BF16: bfloat16 would be emulated, slowly)" in first
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["dtype"] == "float32"


def test_a_resume_keeps_the_dtype_auto_chose_without_probing_again(tmp_path, periodic_text_file, monkeypatch,
                                                                   capsys):
    import gpt.train

    args = ["--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY, "--max_iters", "4", "--dtype", "auto"]
    monkeypatch.setattr(gpt.train, "choose_dtype", lambda *a: (torch.bfloat16, "bfloat16 autocast (probed)"))
    gpt.train.main([*args, "--stop-after", "2"])
    monkeypatch.setattr(gpt.train, "choose_dtype", lambda *a: (torch.float32, "float32 (probed again)"))
    gpt.train.main([*args, "--resume"])
    resumed = capsys.readouterr().out.split("resuming from iteration 2")[1]
    assert "bfloat16 (as the run started)" in resumed and "probed again" not in resumed
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["dtype"] == "bfloat16"


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [(2.0, 1.0, torch.bfloat16), (1.0, 1.0, torch.float32),
                                                    (1.0, 19.0, torch.float32)])
def test_the_probe_picks_bf16_only_when_measured_faster(monkeypatch, fp32_s, bf16_s, chosen):
    from gpt import precision

    monkeypatch.setattr(precision, "bf16_hardware", lambda: "AMX")
    monkeypatch.setattr(precision, "step_seconds", lambda m, x, dtype: bf16_s if dtype == torch.bfloat16 else fp32_s)
    dtype, why = precision.choose_dtype(GPT(ModelConfig(block_size=8, n_layer=1, n_head=1, n_embd=8)), 2,
                                        torch.device("cpu"))
    assert dtype == chosen and f"measured {fp32_s / bf16_s:.2f}x float32 on this CPU's AMX" in why


def test_the_probe_leaves_the_run_as_it_was():
    """The probe's real timing steps draw no torch random numbers the run would see and leave no gradients."""
    from gpt import precision

    model = GPT(ModelConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.5))
    before = torch.get_rng_state()
    seconds = precision.step_seconds(model, torch.randint(0, 11, (2, 8)), torch.float32)
    assert seconds > 0 and all(p.grad is None for p in model.parameters())
    torch.set_rng_state(before)
    probe_rng = torch.get_rng_state()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(precision, "bf16_hardware", lambda: "AMX")
        precision.choose_dtype(model, 2, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), probe_rng) and all(p.grad is None for p in model.parameters())


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from dataclasses import replace

    from gpt.optim import Optimizers

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
    from gpt.train import check_finite, grad_scaler

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
    """gpt/muon.py with a bfloat16 iteration = torch.optim.Muon ("match_rms_adamw"), bit for bit over three
    steps; in float32 its orthogonalized update has every singular value near 1."""
    from gpt.muon import Muon, orthogonalize

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
