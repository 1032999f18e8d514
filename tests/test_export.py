"""ONNX export (both layouts, one graph, KV cache, metadata) and the torch-free decoders, against PyTorch.

One export per layout of the tiny checkpoint per session, through the real CLI: the gqa default with int8,
int4, --genai and --eval; the portable `--attention onnx` layout plain.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import PERIODIC_TEXT, ROOT, run_module

from gpt.decode.backends.ort_decoder import OrtDecoder, open_onnx
from gpt.decode.backends.ort_gqa_decoder import OrtGQADecoder
from gpt.decode.onnx_format import FORMAT_VERSION, METADATA_KEYS, input_names, output_names
from gpt.errors import GPTError
from gpt.model.checkpoint import load_checkpoint

onnx = pytest.importorskip("onnx")


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


@pytest.mark.parametrize("layout", ["gqa", "onnx"])
def test_metadata_round_trip(exported, exported_std, tiny_ckpt, layout):
    paths = [exported[0], exported[1]] if layout == "gqa" else [exported_std]
    manifest = json.loads((tiny_ckpt / "config.json").read_text())
    for path in paths:
        proto = onnx.load(str(path))
        props = {p.key: p.value for p in proto.metadata_props}
        assert set(props) == {*METADATA_KEYS, "data_sha256"}  # the training text's, for the ngram drafter's check
        assert props["data_sha256"] == manifest["data_sha256"] == hashlib.sha256(PERIODIC_TEXT.encode()).hexdigest()
        assert json.loads(props["vocab"]) == manifest["vocab"]
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            assert int(props[key]) == manifest["model"][key]
        assert json.loads(props["val_loss"]) == pytest.approx(manifest["val_loss"])
        assert props["format_version"] == str(FORMAT_VERSION) and props["layout"] == layout
        assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    n = manifest["model"]["n_layer"]
    graph = onnx.load(str(paths[0])).graph
    assert [i.name for i in graph.input] == input_names(n, layout)
    assert [o.name for o in graph.output] == output_names(n)
    ops = {node.op_type for node in graph.node}
    assert ("GroupQueryAttention" in ops) == (layout == "gqa") and ("Attention" in ops) == (layout == "onnx")
    past = graph.input[len(input_names(0, layout))]
    dims = [d.dim_param or d.dim_value for d in past.type.tensor_type.shape.dim]
    assert isinstance(dims[0], str)  # batch is dynamic
    if layout == "gqa":
        assert dims[2] == manifest["model"]["block_size"]  # the fixed in-place buffer
    else:
        assert isinstance(dims[2], str)  # past grows
    decoder = open_onnx(paths[0])
    assert isinstance(decoder, OrtGQADecoder if layout == "gqa" else OrtDecoder)
    assert decoder.vocab == manifest["vocab"] and decoder.block_size == manifest["model"]["block_size"]


@pytest.mark.parametrize("layout", ["gqa", "onnx"])
@pytest.mark.parametrize("batch", [1, 3])
def test_prefill_and_decode_match_pytorch(exported, exported_std, model, layout, batch):
    """Every position of a prefill, then decode steps up to block_size (>= 32 steps when block_size allows)."""
    decoder = open_onnx(exported[0] if layout == "gqa" else exported_std, threads=1)
    rng = np.random.default_rng(batch)
    ids = rng.integers(0, model.config.vocab_size, size=(batch, 5))
    cache = model.new_cache(batch)
    np.testing.assert_allclose(decoder.logits(ids), torch_logits(model, ids, cache), atol=1e-4, rtol=0)
    for _ in range(model.config.block_size - 5):
        token = rng.integers(0, model.config.vocab_size, size=(batch, 1))
        np.testing.assert_allclose(decoder.step(token), torch_logits(model, token, cache)[:, -1], atol=1e-4, rtol=0)
    assert decoder.length == model.config.block_size
    with pytest.raises(GPTError, match="exceeds block_size"):
        decoder.step(token)


@pytest.mark.parametrize("backend", ["gqa", "onnx", "onnxruntime-genai"])
def test_every_decode_step_matches_torch_recompute_across_re_prefills(exported, exported_std, tiny_ckpt, backend):
    """Per-step logits through the Decoder interface, within 1e-4 of the torch decoder recomputing the whole
    window at every step, while gpt.decode.loop feeds the same random ids past block_size (two re-prefills)."""
    from gpt.decode.backends import open_decoder
    from gpt.decode.loop import forced_logits

    if backend == "onnxruntime-genai":
        pytest.importorskip("onnxruntime_genai")
    path = exported_std if backend == "onnx" else exported[0]
    decoder = open_decoder("onnxruntime" if backend in ("gqa", "onnx") else backend, path, threads=1)
    reference = open_decoder("torch", tiny_ckpt, use_cache=False, threads=1)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, len(decoder.vocab), 5).tolist()
    tokens = rng.integers(0, len(decoder.vocab), 2 * decoder.block_size).tolist()
    ours, recomputed = forced_logits(decoder, prompt, tokens), forced_logits(reference, prompt, tokens)
    assert len(ours) == len(recomputed) == len(tokens)
    for step, (a, b) in enumerate(zip(ours, recomputed, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=f"step {step}")


def test_the_traced_sdpa_layout_exports_at_opset_18_and_decodes_like_pytorch(tiny_ckpt, tmp_path):
    """`--attention sdpa --opset 18` (the model's own attention traced op by op, for older runtimes and
    onnxruntime-web): the export's parity gate passes, and every decode step matches torch recompute."""
    import export.onnx as ex
    from gpt.decode.backends import open_decoder
    from gpt.decode.loop import forced_logits

    out = tmp_path / "sdpa18.onnx"
    assert ex.main(["--ckpt", str(tiny_ckpt), "--attention", "sdpa", "--opset", "18", "--out", str(out),
                    "--threads", "1"]) == 0
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 18
    decoder = open_decoder("onnxruntime", out, threads=1)
    tokens = np.random.default_rng(1).integers(0, len(decoder.vocab), decoder.block_size + 8).tolist()
    ours = forced_logits(decoder, [0, 1, 2], tokens)
    recomputed = forced_logits(open_decoder("torch", tiny_ckpt, use_cache=False), [0, 1, 2], tokens)
    for step, (a, b) in enumerate(zip(ours, recomputed, strict=True)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0, err_msg=f"step {step}")


def test_gqa_cache_is_written_in_place(exported, model):
    """Past and present are one buffer: the bound OrtValues never move, the graph's `present` outputs are
    those very buffers, and a step writes its keys/values into them."""
    decoder = open_onnx(exported[0], threads=1)
    decoder.prefill(np.zeros((2, 4), dtype=np.int64))
    pointers = [buffer.data_ptr() for buffer in decoder.cache]
    before = decoder.cache[0].numpy()[:, :, 4].copy()
    for token in range(3):
        decoder.step(np.full((2, 1), token, dtype=np.int64))
    assert [buffer.data_ptr() for buffer in decoder.cache] == pointers
    assert [v.data_ptr() for v in decoder.io.get_outputs()[1:1 + len(pointers)]] == pointers
    after = decoder.cache[0].numpy()
    assert not np.array_equal(after[:, :, 4], before) and np.abs(after[:, :, 4]).sum() > 0


def test_batch_of_two_matches_two_single_runs(exported):
    decoder = open_onnx(exported[0], threads=1)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, len(decoder.vocab), size=(2, 9))
    steps = rng.integers(0, len(decoder.vocab), size=(2, 6))
    batched = [decoder.prefill(ids)] + [decoder.step(steps[:, i:i + 1]) for i in range(6)]
    for b in range(2):
        single = [decoder.prefill(ids[b:b + 1])] + [decoder.step(steps[b:b + 1, i:i + 1]) for i in range(6)]
        for x, y in zip(batched, single, strict=True):
            np.testing.assert_allclose(x[b], y[0], atol=1e-5, rtol=0)


def sample(tiny_ckpt, onnx_path, backend, *args):
    where = ["--onnx", str(onnx_path)] if backend.startswith("onnxruntime") else ["--ckpt", str(tiny_ckpt)]
    return run_module("gpt.sample", "--backend", backend, *where, "--threads", "1", *args)


def test_greedy_text_identical_across_backends_past_block_size(exported, exported_std, tiny_ckpt):
    n = str(3 * 32)  # tiny_ckpt has block_size 32: the window slides and re-prefills twice
    args = ["--prompt", "ROMEO:", "--max-new-tokens", n, "--temperature", "0"]
    ort_text = sample(tiny_ckpt, exported[0], "onnxruntime", *args)
    assert ort_text.returncode == 0, ort_text.stderr
    assert ort_text.stdout == sample(tiny_ckpt, exported_std, "onnxruntime", *args).stdout
    assert ort_text.stdout == sample(tiny_ckpt, exported[0], "torch", *args).stdout
    assert ort_text.stdout == sample(tiny_ckpt, exported[0], "torch", "--no-cache", *args).stdout
    assert "wherefore art thou?" in ort_text.stdout


def test_same_seed_same_samples_across_backends(exported, exported_std, tiny_ckpt):
    args = ["--prompt", "the", "--max-new-tokens", "50", "--temperature", "1.5", "--seed", "5", "--num-samples", "2"]
    a = sample(tiny_ckpt, exported[0], "onnxruntime", *args)
    assert a.returncode == 0, a.stderr
    assert a.stdout == sample(tiny_ckpt, exported[0], "torch", *args).stdout
    assert a.stdout == sample(tiny_ckpt, exported_std, "onnxruntime", *args).stdout
    assert len(a.stdout.split("\n---\n")) == 2


def test_onnxruntime_genai_runs_the_same_file(exported, tiny_ckpt):
    """`--genai` writes genai_config.json; the pip package onnxruntime-genai then runs our file and, behind our
    decoder interface, prints the same text as onnxruntime (greedy and sampled, past block_size)."""
    pytest.importorskip("onnxruntime_genai")
    assert json.loads(exported[0].with_name("genai_config.json").read_text())["search"]["past_present_share_buffer"]
    for args in (["--max-new-tokens", "96", "--temperature", "0"], ["--max-new-tokens", "96", "--temperature", "1.5"]):
        ours = sample(tiny_ckpt, exported[0], "onnxruntime", "--prompt", "ROMEO:", *args)
        genai = sample(tiny_ckpt, exported[0], "onnxruntime-genai", "--prompt", "ROMEO:", *args)
        assert genai.returncode == 0, genai.stderr
        assert genai.stdout == ours.stdout
    batch = sample(tiny_ckpt, exported[0], "onnxruntime-genai", "--num-samples", "2", "--max-new-tokens", "5")
    assert batch.returncode == 2 and "one sample at a time" in batch.stderr


def test_onnxruntime_sampler_runs_with_torch_unimportable(exported):
    argv = ["gpt.sample", "--backend", "onnxruntime", "--onnx", str(exported[0]), "--prompt", "ROMEO:",
            "--max-new-tokens", "40", "--temperature", "0", "--stats"]
    code = ("import sys, runpy; sys.modules['torch'] = None; "  # any `import torch` now raises ImportError
            f"sys.argv = {argv!r}; runpy.run_module('gpt.sample', run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO: wherefore art thou?")
    assert "tok/s" in r.stderr


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_quantized_model_runs_close_to_fp32(exported, periodic_text_file, kind):
    from export.evaluate import onnx_loss

    fp32 = exported[0]
    path = fp32.with_name(f"model.{kind}.onnx")
    decoder = open_onnx(path, threads=1)
    logits = decoder.prefill(np.zeros((2, 5), dtype=np.int64))
    assert logits.shape == (2, len(decoder.vocab)) and np.isfinite(logits).all()
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert "MatMulNBits" in ops or "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops
    ids = np.array([decoder.vocab.index(c) for c in periodic_text_file.read_text()[:2000]], dtype=np.int64)
    loss32, loss_q = onnx_loss(fp32, ids, decoder.block_size), onnx_loss(path, ids, decoder.block_size)
    assert loss_q < loss32 + 0.1


@pytest.fixture(scope="session")
def bad_files(exported, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "garbage.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 40)
    data = exported[0].read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    proto = onnx.load(str(exported[0]))
    del proto.metadata_props[:]
    onnx.save(proto, str(d / "nometa.onnx"))
    for name, layout in (("nolayout", None), ("badlayout", "paged")):
        proto = onnx.load(str(exported[0]))
        props = [p for p in proto.metadata_props if p.key != "layout"]
        del proto.metadata_props[:]
        proto.metadata_props.extend(props)
        if layout:
            entry = proto.metadata_props.add()
            entry.key, entry.value = "layout", layout
        onnx.save(proto, str(d / f"{name}.onnx"))
    (d / "empty.onnx").write_bytes(b"")
    return d


@pytest.mark.parametrize("name, args, message", [
    ("missing.onnx", [], "does not exist"),
    ("empty.onnx", [], "is empty"),
    ("garbage.onnx", [], "not a loadable ONNX model"),
    ("truncated.onnx", [], "not a loadable ONNX model"),
    ("nometa.onnx", [], "not written by export.onnx"),
    ("nolayout.onnx", [], "lacks metadata layout"),
    ("badlayout.onnx", [], "unknown layout 'paged'"),
    ("model.onnx", ["--prompt", "ROMEO: \u00e9\u00e8"], "not in the model's vocabulary"),
])
def test_bad_input_is_one_error_line(exported, bad_files, name, args, message):
    path = exported[0] if name == "model.onnx" else bad_files / name
    r = run_module("gpt.sample", "--backend", "onnxruntime", "--onnx", str(path), "--max-new-tokens", "5", *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    if "layout" in message:
        assert "--attention onnx" in lines[0]


def test_gqa_file_on_a_runtime_without_the_contrib_op(exported, monkeypatch):
    """An onnxruntime built without com.microsoft ops (e.g. a minimal or non-Microsoft build) fails to create the
    session with the op's name in its message: the user is told to re-export the portable layout."""
    import onnxruntime as ort

    def no_contrib(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : This is an invalid model. In Node, "
                           "(\"n0\", GroupQueryAttention, \"com.microsoft\", -1) : Error No Op registered for "
                           "GroupQueryAttention with domain_version of 1")

    monkeypatch.setattr(ort, "InferenceSession", no_contrib)
    with pytest.raises(GPTError, match=r"cannot run; re-export it with `python -m export.onnx --attention onnx`"):
        open_onnx(exported[0])


def test_export_errors_are_one_line(tmp_path, tiny_ckpt, exported, monkeypatch):
    import export.onnx as ex

    with pytest.raises(GPTError, match="does not exist"):
        ex.main(["--ckpt", str(tmp_path / "nope")])
    with pytest.raises(GPTError, match="needs --opset 23"):
        ex.main(["--ckpt", str(tiny_ckpt), "--attention", "onnx", "--opset", "18"])
    with pytest.raises(GPTError, match="needs --opset 21"):
        ex.main(["--ckpt", str(tiny_ckpt), "--opset", "18"])
    with pytest.raises(GPTError, match="--genai needs --attention gqa"):
        ex.main(["--ckpt", str(tiny_ckpt), "--attention", "onnx", "--genai"])
    # A parity failure exits non-zero: reuse the exported graph, pretend PyTorch disagrees.
    monkeypatch.setattr(ex, "export_proto", lambda *a: onnx.load(str(exported[0])))
    monkeypatch.setattr(ex, "parity", lambda *a, **k: {"prefill": 1e-3, "decode": 0.0, "steps": 1, "prompt": 1,
                                                       "batch": 1})
    with pytest.raises(GPTError, match="differ from PyTorch"):
        ex.main(["--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "m.onnx")])


def test_the_real_parity_gate_catches_a_model_that_disagrees(exported, model):
    """parity() itself, not a stand-in: the exported file against a copy of its model with one weight nudged by
    1e-3 must exceed the tolerance (and the unperturbed model must not)."""
    import copy

    from export.verify import TOLERANCE, parity, require_parity

    path = exported[0]
    same = parity(path, model, batch=2, steps=4)
    assert max(same["prefill"], same["decode"]) <= TOLERANCE
    nudged = copy.deepcopy(model)
    with torch.no_grad():
        nudged.h[0].mlp.c_fc.bias += 1e-3
    diff = parity(path, nudged, batch=2, steps=4)
    assert max(diff["prefill"], diff["decode"]) > TOLERANCE
    with pytest.raises(GPTError, match="differ from PyTorch"):
        require_parity(diff, path)
