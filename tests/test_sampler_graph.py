"""The sampler inside the graph (gpt.decode.sampler_graph) draws what the numpy sampler draws, everywhere it is used:
the head alone, gpt.sample's loop (both layouts, across a re-prefill), and the engine's batched step."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import pytest

from gpt.decode.backends.ort_decoder import open_onnx
from gpt.decode.backends.ort_session import open_session
from gpt.decode.loop import generate
from gpt.decode.sampler import Sampler, SamplingParams, sample_tokens
from gpt.decode.sampler_graph import TEMPERATURE, TOKENS, UNIFORM, with_head
from gpt.engine.runner import SlotRunner

TEMPERATURES = (0.05, 0.3, 0.8, 1.0, 2.0, 8.0)


@pytest.fixture(scope="module", params=["gqa", "int8", "portable"])
def model_file(request, exported, exported_std):
    return {"gqa": exported[0], "int8": exported[1], "portable": exported_std}[request.param]


def test_the_head_draws_the_numpy_samplers_tokens(model_file):
    """Thousands of draws over random contexts and temperatures 0.05 .. 8, each row its own temperature and each
    position its own draw: the token after every position is sample_tokens' on the run's logits there (draws of 0
    included). Not a draw within ~1e-16 of 1: there the last bit of onnxruntime's exp and sum decides between tail
    characters of probability ~0 (the module's docstring)."""
    session, meta = open_session(model_file, threads=1, sampler=True)
    rng = np.random.default_rng(0)
    B, T = 4, 6
    names = [o.name for o in session.get_outputs()]
    compared = 0
    for trial in range(20):
        feeds = {"input_ids": rng.integers(0, len(meta.vocab), (B, T))}
        if meta.layout == "gqa":
            feeds["attention_mask"] = np.ones((B, T), dtype=np.int64)
        for i in session.get_inputs():
            if i.name.startswith("past"):
                width = meta.block_size if meta.layout == "gqa" else 0
                feeds[i.name] = np.zeros((B, meta.n_head, width, meta.head_dim), dtype=np.float32)
        temperature = rng.choice(TEMPERATURES, B)
        for u in [rng.random((B, T)) for _ in range(5)] + [np.zeros((B, T))]:
            feeds |= {TEMPERATURE: temperature[:, None, None], UNIFORM: u[..., None]}
            outputs = dict(zip(names, session.run(names, feeds), strict=True))
            rows = outputs["logits"].reshape(B * T, -1)
            expected = sample_tokens(rows, np.repeat(temperature, T), np.zeros(B * T, dtype=np.int64),
                                     np.ones(B * T), u.reshape(-1)).reshape(B, T)
            np.testing.assert_array_equal(outputs[TOKENS], expected, err_msg=f"trial {trial}, T {temperature}")
            compared += B * T
    assert compared == 20 * 6 * B * T


def test_the_file_is_untouched_and_the_head_is_valid_onnx(exported):
    """The head joins the session, not the file (onnxruntime-genai and the web page read the file as exported)."""
    path = exported[0]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    open_onnx(path, threads=1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    model = onnx.load_from_string(with_head(path.read_bytes()))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input][-2:] == [TEMPERATURE, UNIFORM]
    assert model.graph.output[-1].name == TOKENS


class NumpyOnly:
    """The decoder without its `step_sampled`: every step's logits sampled by numpy."""

    def __init__(self, decoder):
        self.decoder, self.vocab, self.block_size = decoder, decoder.vocab, decoder.block_size

    def prefill(self, ids):
        return self.decoder.prefill(ids)

    def step(self, ids):
        return self.decoder.step(ids)


@pytest.mark.parametrize("temperature", [0.8, 2.0])
def test_sampled_text_is_the_numpy_samplers_across_a_re_prefill(model_file, temperature):
    """gpt.sample's loop with the graph sampling: the very text of numpy sampling the logits, for 3 rows and past
    block_size (a re-prefill); and the graph did sample (its steps used step_sampled)."""
    decoder = open_onnx(model_file, threads=1)
    assert decoder.sampling
    n = decoder.block_size + 20
    params = SamplingParams(temperature=temperature, seed=7)
    calls = []
    step_sampled = decoder.step_sampled
    decoder.step_sampled = lambda *a: calls.append(1) or step_sampled(*a)
    fused = generate(decoder, [1, 2, 3], n, Sampler(params), num_samples=3)
    plain = generate(NumpyOnly(open_onnx(model_file, threads=1)), [1, 2, 3], n, Sampler(params), num_samples=3)
    np.testing.assert_array_equal(fused, plain)
    assert len(calls) >= n - 10
    if temperature >= 2:  # the tiny model is near-certain of its periodic text at 0.8
        other = generate(decoder, [1, 2, 3], n, Sampler(SamplingParams(temperature, seed=8)), num_samples=3)
        assert not np.array_equal(fused, other), "the text does not depend on the seed"


def test_a_verify_run_samples_after_every_position(exported):
    """The speculative verify run (gpt.sample's decoder and the engine's runner): the token after each of its
    positions, each with its own draw, is sample_tokens' on that position's logits; at start 0 too."""
    decoder = open_onnx(exported[0], threads=1)
    runner = SlotRunner(exported[0], 2, threads=1)
    rng = np.random.default_rng(3)
    V = len(decoder.vocab)
    ids = rng.integers(0, V, 12).tolist()
    for start, n in [(0, 7), (7, 5), (4, 3)]:
        part, u, t = ids[start:start + n], rng.random(n), float(rng.choice(TEMPERATURES))
        sampled = decoder.run_sampled(part, start, t, u).copy()
        expected = sample_tokens(decoder.run(part, start), np.full(n, t), np.zeros(n, dtype=np.int64), np.ones(n), u)
        np.testing.assert_array_equal(sampled, expected, err_msg=f"decoder, start {start}")
        engine = runner.extend_sampled(1, np.array(part), start, t, u)
        np.testing.assert_array_equal(engine, expected, err_msg=f"runner, start {start}")


@pytest.mark.parametrize("rows", [1, 3])
def test_the_engines_step_samples_what_numpy_samples(exported, rows):
    runner = SlotRunner(exported[0], 4, threads=1)
    rng = np.random.default_rng(rows)
    for slot in range(rows):
        runner.prefill(slot, rng.integers(0, len(runner.vocab), 5 + slot), 0)
    lengths = np.array([5 + slot for slot in range(rows)])
    tokens = rng.integers(0, len(runner.vocab), rows)
    for step in range(20):
        temperature, uniform = rng.choice(TEMPERATURES, rows), rng.random(rows)
        sampled = runner.decode_sampled(tokens, lengths, rows, temperature, uniform).copy()
        expected = sample_tokens(runner.step_logits[:rows, 0], temperature, np.zeros(rows, dtype=np.int64),
                                 np.ones(rows), uniform)
        np.testing.assert_array_equal(sampled, expected, err_msg=f"step {step}")
        tokens, lengths = sampled, lengths + 1
