"""ONNX export (one graph, KV cache, metadata) and the torch-free onnxruntime decoder, against PyTorch.

One export of the tiny checkpoint (fp32 + int8, with --eval) per session, through the real CLI.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, run_module

from gpt.checkpoint import load_checkpoint
from gpt.decoders.ort_decoder import METADATA_KEYS, OrtDecoder, input_names, output_names
from gpt.errors import GPTError

onnx = pytest.importorskip("onnx")


@pytest.fixture(scope="session")
def exported(tiny_ckpt, periodic_text_file, tmp_path_factory):
    """(fp32 path, int8 path, CLI stdout) of `python -m export.onnx --quantize int8 --eval` on tiny_ckpt."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    r = run_module("export.onnx", "--ckpt", str(tiny_ckpt), "--out", str(out), "--quantize", "int8",
                   "--quantize", "int4", "--eval", "--data", str(periodic_text_file), "--threads", "1")
    assert r.returncode == 0, r.stderr
    return out, out.with_name("model.int8.onnx"), r.stdout


@pytest.fixture(scope="session")
def model(tiny_ckpt):
    m, tokenizer, _ = load_checkpoint(tiny_ckpt)
    return m


def torch_logits(model, ids: np.ndarray, cache=None) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(ids), cache=cache)[0].numpy()


def test_cli_reports_parity_size_and_losses(exported):
    fp32, int8, stdout = exported
    assert fp32.is_file() and int8.is_file()
    assert int8.stat().st_size < fp32.stat().st_size
    m = re.search(r"max \|onnxruntime - PyTorch\| = (\S+)", stdout)
    assert m and float(m.group(1)) <= 1e-4, stdout
    assert re.search(r"^fp32 .* 23 +\d+ ", stdout, re.M), stdout
    for kind in ("int8", "int4"):
        m = re.search(kind + r" val loss - fp32 val loss = (\S+) nats", stdout)
        assert m and abs(float(m.group(1))) < 0.1, stdout
    assert fp32.with_name("model.int4.onnx").stat().st_size < int8.stat().st_size


def test_metadata_round_trip(exported, tiny_ckpt):
    fp32, int8, _ = exported
    manifest = json.loads((tiny_ckpt / "config.json").read_text())
    for path in (fp32, int8):
        proto = onnx.load(str(path))
        props = {p.key: p.value for p in proto.metadata_props}
        assert set(props) == set(METADATA_KEYS)
        assert json.loads(props["vocab"]) == manifest["vocab"]
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            assert int(props[key]) == manifest["model"][key]
        assert json.loads(props["val_loss"]) == pytest.approx(manifest["val_loss"])
        assert props["format_version"] == "1"
        assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    n = manifest["model"]["n_layer"]
    graph = onnx.load(str(fp32)).graph
    assert [i.name for i in graph.input] == input_names(n)
    assert [o.name for o in graph.output] == output_names(n)
    dims = [d.dim_param or d.dim_value for d in graph.input[1].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and isinstance(dims[2], str)  # batch and past are dynamic
    decoder = OrtDecoder.from_file(fp32)
    assert decoder.vocab == manifest["vocab"] and decoder.block_size == manifest["model"]["block_size"]


def test_prefill_and_decode_match_pytorch(exported, model):
    decoder = OrtDecoder.from_file(exported[0], threads=1)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.config.vocab_size, size=(1, 11))
    cache = model.new_cache(1)
    got = decoder.forward(ids, decoder.empty_cache(1))  # past = 0: the prefill, every position
    np.testing.assert_allclose(got, torch_logits(model, ids, cache), atol=1e-4, rtol=0)
    assert decoder.past[0].shape == (1, model.config.n_head, 11, model.config.head_dim)
    for _ in range(model.config.block_size - 11):
        token = rng.integers(0, model.config.vocab_size, size=(1, 1))
        np.testing.assert_allclose(decoder.step(token), torch_logits(model, token, cache)[:, -1], atol=1e-4, rtol=0)
    assert decoder.length == model.config.block_size
    with pytest.raises(GPTError, match="exceeds block_size"):
        decoder.step(token)


def test_batch_of_two_matches_two_single_runs(exported):
    decoder = OrtDecoder.from_file(exported[0], threads=1)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, len(decoder.vocab), size=(2, 9))
    steps = rng.integers(0, len(decoder.vocab), size=(2, 6))
    batched = [decoder.prefill(ids)] + [decoder.step(steps[:, i:i + 1]) for i in range(6)]
    for b in range(2):
        single = [decoder.prefill(ids[b:b + 1])] + [decoder.step(steps[b:b + 1, i:i + 1]) for i in range(6)]
        for x, y in zip(batched, single, strict=True):
            np.testing.assert_allclose(x[b], y[0], atol=1e-5, rtol=0)


def sample(tiny_ckpt, onnx_path, backend, *args):
    where = ["--onnx", str(onnx_path)] if backend == "onnxruntime" else ["--ckpt", str(tiny_ckpt)]
    return run_module("gpt.sample", "--backend", backend, *where, "--threads", "1", *args)


def test_greedy_text_identical_across_backends_past_block_size(exported, tiny_ckpt):
    n = str(2 * 32)  # tiny_ckpt has block_size 32: the window slides and re-prefills
    args = ["--prompt", "ROMEO:", "--max-new-tokens", n, "--temperature", "0"]
    ort_text = sample(tiny_ckpt, exported[0], "onnxruntime", *args)
    assert ort_text.returncode == 0, ort_text.stderr
    assert ort_text.stdout == sample(tiny_ckpt, exported[0], "torch", *args).stdout
    assert ort_text.stdout == sample(tiny_ckpt, exported[0], "torch", "--no-cache", *args).stdout
    assert "wherefore art thou?" in ort_text.stdout


def test_same_seed_same_samples_across_backends(exported, tiny_ckpt):
    args = ["--prompt", "the", "--max-new-tokens", "50", "--temperature", "1.5", "--seed", "5", "--num-samples", "2"]
    a = sample(tiny_ckpt, exported[0], "onnxruntime", *args)
    b = sample(tiny_ckpt, exported[0], "torch", *args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and len(a.stdout.split("\n---\n")) == 2


def test_onnxruntime_sampler_runs_with_torch_unimportable(exported):
    argv = ["gpt.sample", "--backend", "onnxruntime", "--onnx", str(exported[0]), "--prompt", "ROMEO:",
            "--max-new-tokens", "40", "--temperature", "0", "--stats"]
    code = ("import sys, runpy; sys.modules['torch'] = None; "  # any `import torch` now raises ImportError
            f"sys.argv = {argv!r}; runpy.run_module('gpt.sample', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO: wherefore art thou?")
    assert "tok/s" in r.stderr


def test_int8_model_runs_close_to_fp32(exported, periodic_text_file):
    from export.onnx import onnx_loss

    fp32, int8, _ = exported
    decoder = OrtDecoder.from_file(int8, threads=1)
    logits = decoder.prefill(np.zeros((2, 5), dtype=np.int64))
    assert logits.shape == (2, len(decoder.vocab)) and np.isfinite(logits).all()
    ids = np.array([decoder.vocab.index(c) for c in periodic_text_file.read_text()[:2000]], dtype=np.int64)
    loss32, loss8 = onnx_loss(fp32, ids, decoder.block_size), onnx_loss(int8, ids, decoder.block_size)
    assert loss8 < loss32 + 0.1


@pytest.fixture(scope="session")
def bad_files(exported, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 40)
    data = exported[0].read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    proto = onnx.load(str(exported[0]))
    del proto.metadata_props[:]
    onnx.save(proto, str(d / "nometa.onnx"))
    (d / "empty.onnx").write_bytes(b"")
    return d


@pytest.mark.parametrize("name, args, message", [
    ("missing.onnx", [], "does not exist"),
    ("empty.onnx", [], "is empty"),
    ("garbage.onnx", [], "not a loadable ONNX model"),
    ("truncated.onnx", [], "not a loadable ONNX model"),
    ("nometa.onnx", [], "not written by export.onnx"),
    ("model.onnx", ["--prompt", "ROMEO: \u00e9\u00e8"], "not in the model's vocabulary"),
])
def test_bad_input_is_one_error_line(exported, bad_files, name, args, message):
    path = exported[0] if name == "model.onnx" else bad_files / name
    r = run_module("gpt.sample", "--backend", "onnxruntime", "--onnx", str(path), "--max-new-tokens", "5", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_export_errors_are_one_line(tmp_path, tiny_ckpt, exported, monkeypatch):
    import export.onnx as ex

    with pytest.raises(GPTError, match="does not exist"):
        ex.main(["--ckpt", str(tmp_path / "nope")])
    with pytest.raises(GPTError, match="needs --opset 23"):
        ex.main(["--ckpt", str(tiny_ckpt), "--opset", "18"])
    # A parity failure exits non-zero: reuse the exported graph, pretend PyTorch disagrees.
    monkeypatch.setattr(ex, "export_proto", lambda *a: onnx.load(str(exported[0])))
    monkeypatch.setattr(ex, "parity", lambda *a, **k: {"prefill": 1e-3, "decode": 0.0, "steps": 1, "prompt": 1,
                                                       "batch": 1})
    with pytest.raises(GPTError, match="differ from PyTorch"):
        ex.main(["--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "m.onnx")])
