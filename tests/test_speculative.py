"""Speculative decoding keeps the model's text: greedy, exactly plain decoding's text at any length; sampling,
exactly the model's distribution (a chi-square test over every outcome, which a wrong accept rule fails); the
same seed, the same text. On a numpy model with a KV cache (every rule, fast) and on the exported file."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import PERIODIC_TEXT

from gpt.generate import generate
from gpt.ngram import NgramDrafter, NgramIndex, self_match, suffix_array
from gpt.sampler import Sampler, SamplingParams
from gpt.speculative import Draft, SpeculativeStats, accept_drafts, generate_speculative, probabilities


class TableModel:
    """A model whose logits after a prefix are a fixed random function of the whole prefix (so a wrong window or
    position changes them), with both interfaces: `prefill`/`step` (gpt.generate) and `run` (the verifier)."""

    def __init__(self, vocab_size: int = 3, block_size: int = 16, sharpness: float = 1.5, seed: int = 0):
        self.vocab, self.block_size = [chr(97 + i) for i in range(vocab_size)], block_size
        self.sharpness, self.seed, self.memo = sharpness, seed, {}
        self.cache: list[int] = []
        self.runs = 0

    def _logits(self, prefix: tuple[int, ...]) -> np.ndarray:
        if prefix not in self.memo:
            digest = hashlib.sha256(repr((self.seed, prefix)).encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            self.memo[prefix] = (rng.standard_normal(len(self.vocab)) * self.sharpness).astype(np.float32)
        return self.memo[prefix]

    def run(self, ids, start: int) -> np.ndarray:
        assert 0 <= start <= len(self.cache) and start + len(ids) <= self.block_size
        self.cache = self.cache[:start] + list(ids)
        self.runs += 1
        return np.stack([self._logits(tuple(self.cache[:start + j + 1])) for j in range(len(ids))])

    def prefill(self, ids: np.ndarray) -> np.ndarray:
        return self.run(ids[0].tolist(), 0)[-1:]

    def step(self, ids: np.ndarray) -> np.ndarray:
        return self.run(ids[0].tolist(), len(self.cache))[-1:]


class FixedDrafter:
    """Deterministic drafts: ids (last + 1) mod V, k of them."""

    def propose(self, history, k, params, rng):
        return Draft([(history[-1] + 1 + j) % 3 for j in range(k)])


class SamplingDrafter:
    """Drafts drawn from a fixed distribution q (skewed, unlike any of the model's), q returned with them."""

    q = np.array([0.6, 0.3, 0.1])

    def propose(self, history, k, params, rng):
        tokens = [int(rng.choice(3, p=self.q)) for _ in range(k)]
        return Draft(tokens, np.tile(self.q, (k, 1)))


class ArgmaxDrafter:
    """Deterministic drafts: the model's own greedy continuation (q one-hot)."""

    def __init__(self, model: TableModel):
        self.model = model

    def propose(self, history, k, params, rng):
        window, out = list(history[-self.model.block_size // 2:]), []
        for _ in range(k):
            out.append(int(np.argmax(self.model._logits(tuple(window)))))
            window.append(out[-1])
        return Draft(out)


class OracleDrafter:
    """Greedy drafts that are right most of the time: the model's own argmax, every third one wrong."""

    def __init__(self, model: TableModel):
        self.model, self.calls = model, 0

    def propose(self, history, k, params, rng):
        self.calls += 1
        window, out = list(history[-self.model.block_size // 2:]), []
        for j in range(k):
            best = int(np.argmax(self.model._logits(tuple(window))))
            token = (best + 1) % 3 if (self.calls + j) % 3 == 0 else best
            out.append(token)
            window.append(token)
        return Draft(out)


def test_greedy_text_is_plain_decodings_past_block_size():
    for seed in range(4):
        model = TableModel(block_size=16, seed=seed)
        prompt = [0, 1, 2, 1][:seed + 1]
        plain = generate(model, prompt, 70, Sampler(SamplingParams(temperature=0)))[0].tolist()
        for drafter in (OracleDrafter(model), FixedDrafter()):
            for k in (1, 3, 8):
                stats = SpeculativeStats()
                got = generate_speculative(model, prompt, 70, SamplingParams(temperature=0), drafter, k,
                                           stats=stats)
                assert got == plain, (seed, type(drafter).__name__, k)
        assert sum(stats.accepted) > 0  # the oracle's drafts were accepted: fewer runs than tokens


def exact_distribution(model: TableModel, prompt: list[int], n: int, params: SamplingParams) -> dict:
    """P(every continuation of n ids) under plain sampling: the product of the model's probabilities."""
    out = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for seq, p in out.items():
            probs = probabilities(model._logits(tuple(prompt) + seq)[None], params)[0]
            for t, q in enumerate(probs):
                if q > 0:
                    nxt[seq + (t,)] = p * q
        out = nxt
    return out


def chi_square(model, prompt, n, params, drafter, draws: int) -> float:
    exact = exact_distribution(model, prompt, n, params)
    counts: dict[tuple, int] = {}
    for seed in range(draws):
        got = tuple(generate_speculative(model, prompt, n, SamplingParams(params.temperature, params.top_k,
                                                                            params.top_p, seed), drafter, 3))
        counts[got] = counts.get(got, 0) + 1
    assert set(counts) <= set(exact)  # nothing the model could not have sampled
    return sum((counts.get(s, 0) - draws * p) ** 2 / (draws * p) for s, p in exact.items())


# 26 outcomes (3^3, minus those top-k drops): a chi-square with ~26 degrees of freedom has mean ~26 and sd ~7;
# 26 + 6 sd is never reached by a correct rule (the draws are seeded: the test is deterministic).
LIMIT = 70
DRAWS = 6000


MODEL = TableModel(vocab_size=3, block_size=16)
DRAFTERS = {"fixed one-hot q": FixedDrafter(), "argmax one-hot q": ArgmaxDrafter(MODEL), "sampled q": SamplingDrafter()}


@pytest.mark.parametrize("drafter", DRAFTERS.values(), ids=DRAFTERS.keys())
@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(0.8, top_k=2)], ids=["T=1", "T=0.8 top-k 2"])
def test_sampled_text_has_exactly_the_models_distribution(drafter, params):
    assert chi_square(MODEL, [0], 3, params, drafter, DRAWS) < LIMIT


def argmax_rule(rows, draft, params, rng):
    """Wrong: a draft is kept where it is the model's argmax, otherwise the next id is drawn from p."""
    for j, x in enumerate(draft.tokens):
        if x != int(np.argmax(rows[j])):
            return j, probabilities(rows[j:j + 1], params)[0]
    return len(draft.tokens), probabilities(rows[-1:], params)[0]


def no_residual_rule(rows, draft, params, rng):
    """Wrong: min(1, p/q) as it should be, but a rejection draws from p instead of the residual."""
    p = probabilities(rows, params)
    for j, x in enumerate(draft.tokens):
        if rng.random() >= p[j, x]:
            return j, p[j]
    return len(draft.tokens), p[-1]


@pytest.mark.parametrize("rule", [argmax_rule, no_residual_rule], ids=["argmax", "no residual"])
def test_a_wrong_accept_rule_fails_the_distribution_test(monkeypatch, rule):
    """The same statistic lands far past the limit when the rule is not min(1, p/q) with the residual."""
    import gpt.speculative as spec

    monkeypatch.setattr(spec, "accept_drafts", rule)
    assert chi_square(MODEL, [0], 3, SamplingParams(1.0), ArgmaxDrafter(MODEL), DRAWS) > 3 * LIMIT


def test_rejection_draws_from_the_residual():
    """A rejected one-hot draft x: the next id is never x (normalize(max(0, p - q)) has no mass there)."""
    rows = np.log(np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]]))
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, p = accept_drafts(rows, Draft([0]), SamplingParams(1.0), rng)
        if n == 0:
            assert p[0] == 0 and np.isclose(p.sum(), 0.5)


def test_same_seed_same_text_and_seeds_differ():
    model = TableModel(vocab_size=3, block_size=16)
    texts = [generate_speculative(model, [0], 40, SamplingParams(0.8, seed=s), FixedDrafter(), 4) for s in (1, 1, 2)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


# ---- the ngram drafter -------------------------------------------------------------------------------------

def test_suffix_array_sorts_every_suffix():
    tokens = np.random.default_rng(0).integers(0, 3, 3000).astype(np.uint8)
    sa, text = suffix_array(tokens), tokens.tobytes()
    assert sorted(range(len(text)), key=lambda i: text[i:i + 33]) == sorted(sa.tolist(), key=lambda i: text[i:i + 33])
    assert [text[i:i + 33] for i in sa] == sorted(text[i:i + 33] for i in range(len(text)))


def test_ngram_drafts_continue_the_training_text_and_the_text_so_far():
    vocab = sorted(set(PERIODIC_TEXT + "XYZ"))
    stoi = {c: i for i, c in enumerate(vocab)}
    index = NgramIndex.build(PERIODIC_TEXT[:2000], vocab, "sha")
    drafter = NgramDrafter(index)
    ids = [stoi[c] for c in "the quick brown "]
    draft = drafter.propose(ids, 6, SamplingParams(0), None)
    assert "".join(vocab[i] for i in draft.tokens) == "fox ju"
    unseen = [stoi[c] for c in "XYZZY XYZZY XYZ"]  # not in the training text: only the text so far knows it
    assert "".join(vocab[i] for i in drafter.propose(unseen, 3, SamplingParams(0), None).tokens) == "ZY "
    assert self_match(bytes([1, 2, 3, 1, 2])) == (2, 2)
    assert drafter.propose([stoi["X"]], 4, SamplingParams(0), None).tokens == []  # unsure: no draft


def test_ngram_index_round_trips_and_is_checked(tmp_path):
    from gpt.errors import GPTError
    from gpt.ngram import INDEX_FILE, open_index

    vocab = sorted(set(PERIODIC_TEXT))
    model = tmp_path / "model.onnx"
    index = open_index(model, vocab, "a" * 64, PERIODIC_TEXT[:5000], "a" * 64, say=lambda _: None)
    again = open_index(model, vocab, "a" * 64)
    assert (tmp_path / INDEX_FILE).is_file() and (again.suffixes == index.suffixes).all()
    with pytest.raises(GPTError, match="indexes another training text"):
        open_index(model, vocab, "b" * 64)
    with pytest.raises(GPTError, match="another vocabulary"):
        open_index(model, vocab[:-1], "a" * 64)
