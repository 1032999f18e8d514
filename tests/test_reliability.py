"""Training loses nothing: atomic all-or-nothing checkpoints, exact resume (bit-identical on CPU) after
--stop-after, SIGINT or kill -9 at any point, a clean stop on a NaN loss, and 2-process DDP (gloo)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ONE_THREAD, ROOT, TINY, run_module

from gpt import fsutil
from gpt.config import ModelConfig
from gpt.model import GPT
from gpt.model.checkpoint import STAGED, WEIGHTS, load_checkpoint, save_checkpoint
from gpt.tokenizer import CharTokenizer

MAX_ITERS, EVAL = 48, 8
# dropout > 0: training draws from the torch RNG, so a resume that failed to restore it would show
REL = [*TINY, "--dropout", "0.1", "--eval_iters", "2", "--max_iters", str(MAX_ITERS), "--eval_interval", str(EVAL),
       "--optimizer", "adamw"]  # (the cpu preset's Muon has its own resume test)
ARTIFACTS = {"config.json", "log.jsonl", "loss.png", "model.safetensors", "train_state.pt"}


def train(data, out, *extra, env=None):
    return run_module("gpt.train", "--data", str(data), "--out-dir", str(out), *REL, *extra,
                      env={**ONE_THREAD, **(env or {})})


def popen_train(data, out, *extra):
    return subprocess.Popen([sys.executable, "-m", "gpt.train", "--data", str(data), "--out-dir", str(out), *REL,
                             *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **ONE_THREAD, "PYTHONUNBUFFERED": "1"})


def wait_for_line(proc, prefix: str, timeout: float = 120) -> list[str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(prefix):
            return lines
    proc.wait(timeout)
    raise AssertionError(f"{prefix!r} never printed; exit {proc.returncode}: {''.join(lines)}{proc.stderr.read()}")


def log_rows(out):
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "time"} for r in rows]


def state(out):
    return torch.load(out / "train_state.pt", weights_only=True)


def assert_same_run(a, b):
    """Same weights, optimizer, RNG and sampler state, best checkpoint and losses, bit for bit."""
    assert (a / WEIGHTS).read_bytes() == (b / WEIGHTS).read_bytes()
    assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())
    assert log_rows(a) == log_rows(b)
    sa, sb = state(a), state(b)
    assert (sa["iter"], sa["best_val"], sa["ranks"][0]["sampler"]) == (sb["iter"], sb["best_val"],
                                                                       sb["ranks"][0]["sampler"])
    assert torch.equal(sa["ranks"][0]["torch"], sb["ranks"][0]["torch"])
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    assert len(sa["optimizer"]) == len(sb["optimizer"])  # one state per optimizer (AdamW, or AdamW + Muon)
    assert sa["ema"].keys() == sb["ema"].keys()  # the weights' moving average, when the run keeps one
    for k, v in sa["ema"].get("weights", {}).items():
        assert torch.equal(v, sb["ema"]["weights"][k]), k
    for part_a, part_b in zip(sa["optimizer"], sb["optimizer"], strict=True):
        assert part_a["state"].keys() == part_b["state"].keys()
        for i, s in part_a["state"].items():
            for k, v in s.items():
                assert torch.equal(v, part_b["state"][i][k]), (i, k)


def assert_loadable(out):
    """The checkpoint loads (its hash verified) and the state loads with weights_only=True."""
    _, _, manifest = load_checkpoint(out)
    s = state(out)
    assert s["iter"] % EVAL == 0 or s["iter"] == MAX_ITERS
    return manifest, s


@pytest.fixture(scope="module")
def reference(tmp_path_factory, periodic_text_file):
    """One uninterrupted run: what every interrupted-and-resumed run must reproduce exactly."""
    out = tmp_path_factory.mktemp("reference")
    r = train(periodic_text_file, out)
    assert r.returncode == 0, r.stderr
    assert {p.name for p in out.iterdir()} == ARTIFACTS
    return out


def test_stop_after_then_resume_is_bit_identical(reference, tmp_path, periodic_text_file):
    r = train(periodic_text_file, tmp_path, "--stop-after", "20")
    assert r.returncode == 0, r.stderr
    assert "stopped after iteration 20 of 48; continue with --resume" in r.stdout
    assert state(tmp_path)["iter"] == 20 and [row["iter"] for row in log_rows(tmp_path)] == [0, 8, 16]
    r = train(periodic_text_file, tmp_path, "--resume")
    assert r.returncode == 0, r.stderr
    assert "resuming from iteration 20" in r.stdout
    assert_same_run(reference, tmp_path)  # log.jsonl continues: rows 0..48, none twice


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_step_saves_exits_0_and_resumes_bit_identically(reference, tmp_path,
                                                                              periodic_text_file, sig):
    proc = popen_train(periodic_text_file, tmp_path)
    wait_for_line(proc, "iter 0:")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    stopped = state(tmp_path)["iter"]
    assert 1 <= stopped < MAX_ITERS
    assert f"{sig.name}: finished iteration {stopped - 1}, saved state; continue with" in out and "--resume" in out
    r = train(periodic_text_file, tmp_path, "--resume")
    assert r.returncode == 0, r.stderr
    assert_same_run(reference, tmp_path)


def test_muon_resume_is_bit_identical_and_needs_the_same_optimizer(tmp_path, periodic_text_file):
    """Muon's momentum is part of the state: stop + resume equals one run; resuming it as AdamW is refused."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert train(periodic_text_file, whole, "--optimizer", "muon").returncode == 0
    assert train(periodic_text_file, split, "--optimizer", "muon", "--stop-after", "20").returncode == 0
    r = train(periodic_text_file, split, "--optimizer", "muon", "--resume")
    assert r.returncode == 0, r.stderr
    assert_same_run(whole, split)
    s = state(split)
    assert json.loads(s["train_config"])["optimizer"] == "muon" and len(s["optimizer"]) == 2
    assert any("momentum_buffer" in v for v in s["optimizer"][1]["state"].values())
    r = train(periodic_text_file, split, "--resume", "--optimizer", "adamw")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "the saved optimizer state has 2 part(s), --optimizer needs 1" in r.stderr


def test_a_moving_average_is_what_is_saved_and_resumes_bit_identically(tmp_path, periodic_text_file):
    """--ema_decay: the checkpoint holds the average (not the last weights), stop + resume equals one run
    (wsd schedule too); resuming a run that kept no average with --ema_decay is refused in one line."""
    whole, split, plain = tmp_path / "whole", tmp_path / "split", tmp_path / "plain"
    ema = ["--ema_decay", "0.9", "--lr_schedule", "wsd"]
    assert train(periodic_text_file, whole, *ema).returncode == 0
    assert train(periodic_text_file, split, *ema, "--stop-after", "20").returncode == 0
    r = train(periodic_text_file, split, *ema, "--resume")
    assert r.returncode == 0, r.stderr
    assert_same_run(whole, split)
    s = state(whole)
    assert s["ema"]["updates"] == MAX_ITERS
    saved, _, manifest = load_checkpoint(whole)
    if manifest["iter"] == MAX_ITERS:  # the best evaluation was the last: the saved weights are its average
        name = next(k for k in s["model"] if k.endswith("c_fc.weight"))
        assert torch.equal(saved.state_dict()[name], s["ema"]["weights"][name])
        assert not torch.equal(s["ema"]["weights"][name], s["model"][name])
    assert train(periodic_text_file, plain, "--stop-after", "20").returncode == 0
    r = train(periodic_text_file, plain, "--resume", "--ema_decay", "0.9")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1, r.stderr
    assert "has no moving average of the weights" in r.stderr


# Each run of the chain is killed (SIGKILL, as kill -9) at a chosen point: the fault-injection points inside a
# save, or from outside when a line is printed (right after an evaluation, often mid-save). After every kill
# the checkpoint must load and the state must resume; the last resume must reproduce the reference exactly.
KILLS = [
    ("after-weights@2", None),  # new weights staged, manifest not written: the previous checkpoint loads
    ("after-manifest@1", None),  # manifest committed, staged weights not renamed: the new checkpoint loads
    ("before-state@2", None),  # train_state.pt temp file written, not renamed: the previous state resumes
    (None, "iter 40:"),  # kill -9 from outside, just after the evaluation at 40 was printed
]


def test_kill_9_at_any_point_leaves_a_loadable_checkpoint_that_resumes_exactly(reference, tmp_path, periodic_text_file):
    for i, (fault, line) in enumerate(KILLS):
        resume = ["--resume"] if i else []
        if fault:
            r = train(periodic_text_file, tmp_path, *resume, env={fsutil.FAULT_ENV: fault})
            assert r.returncode == -signal.SIGKILL, (fault, r.returncode, r.stderr)
            assert f"fault injected: killed at {fault}" in r.stderr
        else:
            proc = popen_train(periodic_text_file, tmp_path, *resume)
            wait_for_line(proc, line)
            proc.kill()
            proc.communicate(timeout=60)
        manifest, s = assert_loadable(tmp_path)
        if fault == "after-weights@2":  # killed saving the iteration-8 checkpoint: iteration 0's survives
            assert manifest["iter"] == 0 and (tmp_path / STAGED).exists()
        if fault == "after-manifest@1":  # committed: the iteration-8 checkpoint is read from the staged file
            assert manifest["iter"] == 8 and (tmp_path / STAGED).exists()
            assert hashlib.sha256((tmp_path / WEIGHTS).read_bytes()).hexdigest() != manifest["weights_sha256"]
    r = train(periodic_text_file, tmp_path, "--resume")
    assert r.returncode == 0, r.stderr
    assert {p.name for p in tmp_path.iterdir()} == ARTIFACTS  # no staged or temp files left behind
    assert_same_run(reference, tmp_path)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(reference, tmp_path, periodic_text_file):
    r = train(periodic_text_file, tmp_path, env={fsutil.FAULT_ENV: "nan-loss@13"})
    assert r.returncode == 2
    assert r.stderr.startswith("error: loss became nan at iteration 13: training stopped; the last good "
                               f"checkpoint in {tmp_path} is kept")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    manifest, s = assert_loadable(tmp_path)
    assert manifest["iter"] == 8 and s["iter"] == 8
    r = train(periodic_text_file, tmp_path, "--resume")  # the kept state resumes to the uninterrupted result
    assert r.returncode == 0, r.stderr
    assert_same_run(reference, tmp_path)


def test_every_crash_point_of_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch):
    """In-process: stop a save at each point (as a kill would) and check what loads."""
    tok = CharTokenizer.from_text("abcd")
    models = []
    for seed in range(3):
        torch.manual_seed(seed)
        models.append(GPT(ModelConfig(vocab_size=4, block_size=8, n_layer=1, n_head=1, n_embd=8, dropout=0)))

    def stop_at(point):
        def hook(name):
            if name == point:
                raise SystemExit(f"killed at {name}")
        return hook

    for point, survivor in [("before-weights", 0), ("after-weights", 0), ("after-manifest", 1)]:
        out = tmp_path / point
        save_checkpoint(out, models[0], tok, iter=0)
        monkeypatch.setattr("gpt.model.checkpoint.fault_point", stop_at(point))
        monkeypatch.setattr("gpt.fsutil.fault_point", stop_at(point))
        with pytest.raises(SystemExit):
            save_checkpoint(out, models[1], tok, iter=1)
        monkeypatch.undo()
        model, _, manifest = load_checkpoint(out)
        assert manifest["iter"] == survivor
        assert torch.equal(model.wte.weight, models[survivor].wte.weight)
        save_checkpoint(out, models[2], tok, iter=2)  # the next save completes whatever was left
        model, _, manifest = load_checkpoint(out)
        assert manifest["iter"] == 2 and torch.equal(model.wte.weight, models[2].wte.weight)
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_two_process_ddp_on_cpu_trains_and_only_rank_0_writes(tmp_path, periodic_text_file):
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gpt.train", "--data", str(periodic_text_file), "--out-dir", str(tmp_path), *TINY,
                        "--max_iters", "30", "--eval_interval", "10", "--gradient_accumulation_steps", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("parameters") == 1 and r.stdout.count("done:") == 1  # rank 0 alone prints
    assert "2 processes x 1 micro-steps" in r.stdout
    assert {p.name for p in tmp_path.iterdir()} == ARTIFACTS
    rows = log_rows(tmp_path)
    assert [row["iter"] for row in rows] == [0, 10, 20, 30]  # rank 0 alone logs
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.5
    s = state(tmp_path)
    assert s["world_size"] == 2 and len(s["ranks"]) == 2
    assert s["ranks"][0]["sampler"] != s["ranks"][1]["sampler"]  # each rank draws its own batches
    load_checkpoint(tmp_path)


TEARDOWN_SCRIPT = """
import gc, json, sys, time, torch
from pathlib import Path
from torch.nn.parallel import DistributedDataParallel
from gpt.train.distributed import gather, setup_distributed, teardown
def gloo_threads():  # this process's threads that gloo started, by the names they give themselves
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            pass  # it left while listed
    return sorted(n for n in names if "gloo" in n)
gc.disable()  # the worst case: no collection of DDP's reference cycle before teardown unless teardown runs one
dist, _ = setup_distributed("cpu")
DistributedDataParallel(torch.nn.Linear(2, 2))
gather(dist, {"x": torch.zeros(1)})
during = gloo_threads()
teardown(dist)
deadline = time.monotonic() + 2  # a joined thread stays listed until the kernel has finished its exit
while gloo_threads() and time.monotonic() < deadline:
    time.sleep(0.01)
Path(sys.argv[1], f"rank{dist.rank}").write_text(json.dumps({"during": during, "after": gloo_threads()}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads thread names in /proc")
def test_teardown_stops_the_gloo_threads_so_no_rank_aborts_at_exit(tmp_path):
    """A process group kept alive past teardown leaves gloo's worker threads running into interpreter shutdown,
    where one still releasing a collective's tensors aborts the rank (SIGABRT, 1 DDP run in 10 here). Only
    gloo's threads count (torch may start others lazily), and one still exiting after its join gets 2 s."""
    script = tmp_path / "teardown.py"
    script.write_text(TEARDOWN_SCRIPT)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        str(script), str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ranks = [json.loads((tmp_path / f"rank{rank}").read_text()) for rank in (0, 1)]
    assert all("pt_gloo_runloop" in rank["during"] for rank in ranks), ranks  # the names this test looks for
    assert [rank["after"] for rank in ranks] == [[], []], ranks


def test_signal_handlers_are_restored_after_training():
    from gpt.train.distributed import StopRequest

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert signal.getsignal(signal.SIGINT) != before[0]
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the same Ctrl-C relayed (within 2 s): not an abort
        assert stop.signal == "SIGINT"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_write_reaches_the_disk_before_its_rename_and_the_rename_after_it(tmp_path, monkeypatch):
    """What a power cut needs beyond atomicity: the data fsynced before os.replace (or the rename can reach the
    disk first, naming an empty file), the directory fsynced after it (or the rename itself can be lost)."""
    import stat

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync directory" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "fsync", fsync)
    monkeypatch.setattr(fsutil.os, "replace", replace)
    fsutil.atomic_write_bytes(tmp_path / "config.json", b"{}")
    assert events == ["fsync file", "replace", "fsync directory"]


@pytest.mark.parametrize("fail_at", ["write", "replace"])
def test_atomic_write_leaves_the_target_intact_when_the_write_fails(tmp_path, monkeypatch, fail_at):
    """A writer that dies mid-way (a half-written temp file) or an os.replace that raises leaves the old file
    byte for byte, and no temp file behind."""
    from gpt import fsutil

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old contents\n" * 100)

    class Boom(OSError):
        pass

    def fail(*args, **kwargs):
        raise Boom("disk full")

    if fail_at == "replace":
        monkeypatch.setattr(fsutil.os, "replace", fail)
    else:  # the data reaches the temp file only in part, then the write fails
        real_fsync = fsutil.os.fsync
        monkeypatch.setattr(fsutil.os, "fsync", lambda fd: (real_fsync(fd), fail()))
    with pytest.raises(Boom):
        fsutil.atomic_write_bytes(target, b"new contents that never land\n" * 1000)
    assert target.read_bytes() == b"old contents\n" * 100
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
