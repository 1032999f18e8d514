import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt.decode.loop import generate
from gpt.decode.sampler import Sampler, SamplingParams, Uniforms, filter_logits, sample_tokens, softmax
from gpt.errors import GPTError


def test_top_k_keeps_exactly_k():
    logits = np.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = np.isfinite(filter_logits(logits, top_k=2))
    np.testing.assert_array_equal(kept, [[False, True, False, True, False]])


def test_top_k_above_vocab_is_clamped():
    logits = np.array([[1.0, 2.0, 3.0]])
    assert np.isfinite(filter_logits(logits, top_k=100)).all()


def test_top_p_keeps_smallest_set_reaching_p():
    probs = np.array([[0.5, 0.3, 0.15, 0.05]])
    logits = np.log(probs)
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_p=0.79)), [[True, True, False, False]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_p=0.81)), [[True, True, True, False]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(logits, top_p=0.4)), [[True, False, False, False]])


def test_top_p_and_top_k_follow_each_token_not_its_index():
    """Unsorted vocabularies, two rows in different orders: a mask applied in sorted order without mapping it
    back to the tokens would keep the wrong ones."""
    probs = np.array([0.05, 0.5, 0.15, 0.3])  # ranks: token 1, 3, 2, 0
    rows = np.log(np.stack([probs, probs[::-1]]))
    np.testing.assert_array_equal(np.isfinite(filter_logits(rows, top_p=0.79)),
                                  [[False, True, False, True], [True, False, True, False]])
    np.testing.assert_array_equal(np.isfinite(filter_logits(rows, top_k=3)),
                                  [[False, True, True, True], [True, True, True, False]])


def test_temperature_zero_is_argmax():
    logits = np.random.default_rng(0).normal(size=(3, 10))
    np.testing.assert_array_equal(Sampler(SamplingParams(temperature=0))(logits), logits.argmax(-1))


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([[0.7, 0.2, 0.1]] * 20000))
    counts = np.bincount(Sampler(SamplingParams(temperature=1.0, seed=3))(logits), minlength=3) / 20000
    np.testing.assert_allclose(counts, [0.7, 0.2, 0.1], atol=0.02)


@pytest.mark.parametrize("kwargs", [{"temperature": -1}, {"top_k": -1}, {"top_p": 0}, {"top_p": 1.5}])
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(GPTError):
        SamplingParams(**kwargs)


@settings(deadline=None, max_examples=60)
@given(temperature=st.floats(0, 5), top_k=st.integers(0, 80), top_p=st.floats(0.01, 1.0),
       seed=st.integers(0, 2**32 - 1), logits=st.lists(st.floats(-30, 30), min_size=2, max_size=70))
def test_any_valid_parameters_give_a_valid_token_deterministically(temperature, top_k, top_p, seed, logits):
    params = SamplingParams(temperature, top_k, top_p, seed)
    x = np.array([logits])
    a, b = Sampler(params)(x), Sampler(params)(x)
    assert a == b and 0 <= a[0] < len(logits)
    if temperature > 0:
        assert np.isfinite(filter_logits((x - x.max()) / temperature, top_k, top_p)[0, a[0]])


class CountingDecoder:
    """Next token = (last token + 1) mod V; records the window sizes the loop asks for."""

    vocab = list("abcdefgh")
    block_size = 8

    def __init__(self):
        self.calls: list[tuple[str, int]] = []
        self.length = 0

    def _logits(self, last):
        return np.eye(len(self.vocab))[(last + 1) % len(self.vocab)] * 10

    def prefill(self, ids):
        self.calls.append(("prefill", ids.shape[1]))
        self.length = ids.shape[1]
        return self._logits(ids[:, -1])

    def step(self, ids):
        self.length += 1
        assert self.length <= self.block_size
        self.calls.append(("step", 1))
        return self._logits(ids[:, -1])


def test_loop_keeps_half_a_block_when_the_window_is_full():
    d = CountingDecoder()
    out = generate(d, [0, 1, 2], 20, Sampler(SamplingParams(temperature=0)), num_samples=2)
    assert out.shape == (2, 20)
    np.testing.assert_array_equal(out[0], (np.arange(20) + 3) % 8)
    prefills = [n for kind, n in d.calls if kind == "prefill"]
    assert prefills[0] == 3 and all(n == d.block_size // 2 for n in prefills[1:]) and len(prefills) > 2


def test_loop_refuses_bad_counts_naming_its_parameters():
    """The library names its Python parameters; only the CLI names flags (tests/test_bad_input.py)."""
    with pytest.raises(GPTError, match=r"^max_new_tokens must be in \[0, 1,000,000\], got -1$"):
        generate(CountingDecoder(), [0], -1, Sampler(SamplingParams()))
    with pytest.raises(GPTError, match=r"^num_samples must be in \[1, 1024\], got 0; .* another seed$"):
        generate(CountingDecoder(), [0], 5, Sampler(SamplingParams()), num_samples=0)
    with pytest.raises(GPTError, match="the prompt must hold at least one token"):
        generate(CountingDecoder(), [], 5, Sampler(SamplingParams()))


def test_softmax_sums_to_one():
    np.testing.assert_allclose(softmax(np.array([[1.0, 2.0, -np.inf]])).sum(), 1.0)


def test_a_single_row_draws_the_same_token_as_in_a_batch():
    """Batch 1 takes its own path (`_sample_plain_row`, no batch axis): the same float64 operations, so the same
    token as that row in a batch, for any logits, temperature and draw, a draw on a step of the CDF included."""
    rng = np.random.default_rng(3)
    off_k, off_p = np.zeros(2, dtype=np.int64), np.ones(2)
    for i in range(5000):
        row = (rng.standard_normal(65) * rng.choice([0.1, 1.0, 5.0, 30.0])).astype(np.float32 if i % 2 else np.float64)
        t = rng.choice([1e-3, 0.5, 0.8, 1.0, 10.0])
        x = np.exp((row.astype(np.float64) - row.max()) / t)
        x /= x.sum()
        cdf = np.add.accumulate(x)
        u = cdf[rng.integers(65)] / cdf[-1] if i % 3 == 0 else rng.random()
        u = min(u, np.nextafter(1.0, 0.0))
        alone = sample_tokens(row[None], np.array([t]), off_k[:1], off_p[:1], np.array([u]))
        batch = sample_tokens(np.stack([row, row]), np.array([t, t]), off_k, off_p, np.array([u, u]))
        assert alone.tolist() == batch[:1].tolist(), (i, t, u)


def test_draws_are_the_generators_own_in_order_whatever_the_peeks():
    """`Uniforms` draws a block ahead; what it hands out is what one `rng.random()` per token gives, in order,
    across block ends, whatever a drafter peeked beyond what was taken."""
    u = Uniforms(np.random.default_rng(7), greedy=False)
    reference = np.random.default_rng(7)
    spent = []
    for n in [1, 5, 0, 17, Uniforms.BLOCK - 10, 3, Uniforms.BLOCK, 9]:
        ahead = u.peek(n + 4).copy()
        u.take(n)
        spent.extend(ahead[:n])
    assert spent == [reference.random() for _ in spent]
    assert Uniforms(np.random.default_rng(7), greedy=True).peek(3).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("batch", [1, 3])
def test_a_batch_spends_one_draw_per_row_per_step_in_row_order(batch):
    """`Sampler` gives row b of each step the step's b-th draw, as `rng.random(batch)` per step would."""
    logits = np.random.default_rng(0).standard_normal((40, batch, 65)).astype(np.float32)
    params = SamplingParams(temperature=0.9, seed=11)
    sampler, rng = Sampler(params), np.random.default_rng(11)
    t, k, p = np.full(batch, 0.9), np.zeros(batch, dtype=np.int64), np.ones(batch)
    for step in logits:
        assert sampler(step).tolist() == sample_tokens(step, t, k, p, rng.random(batch)).tolist()
