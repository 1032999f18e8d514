"""Speculative decoding keeps the model's text: the very text plain decoding writes for the same seed, greedy or
sampled, at any length; so exactly the model's distribution (a chi-square test over every outcome, which a wrong
accept rule fails). On a numpy model with a KV cache (every rule, fast) and on the exported file."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from conftest import PERIODIC_TEXT

from gpt.decode.loop import generate
from gpt.decode.sampler import Sampler, SamplingParams, filter_logits, sample_tokens, softmax
from gpt.decode.speculative.loop import Pacer, SpeculativeStats, generate_speculative, model_tokens
from gpt.decode.speculative.ngram import NgramDrafter, NgramIndex, self_match, suffix_array
from gpt.errors import GPTError


class TableModel:
    """A model whose logits after a prefix are a fixed random function of the whole prefix (so a wrong window or
    position changes them), with both interfaces: `prefill`/`step` (gpt.decode.loop) and `run` (the verifier)."""

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


def probabilities(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The distribution plain sampling draws from after `logits` [V] (what `sample_tokens` inverts)."""
    scaled = (logits - logits.max()) / params.temperature
    return softmax(filter_logits(scaled[None].astype(np.float64), params.top_k, params.top_p))[0]


class FixedDrafter:
    """Deterministic drafts: ids (last + 1) mod V, k of them."""

    def propose(self, history, k, params, uniforms):
        return [(history[-1] + 1 + j) % 3 for j in range(k)]


class ArgmaxDrafter:
    """Deterministic drafts: the model's own greedy continuation."""

    def __init__(self, model: TableModel):
        self.model = model

    def propose(self, history, k, params, uniforms):
        window, out = list(history[-self.model.block_size // 2:]), []
        for _ in range(k):
            out.append(int(np.argmax(self.model._logits(tuple(window)))))
            window.append(out[-1])
        return out


class CoupledDrafter:
    """Drafts sampled from a fixed distribution q, unlike any of the model's, with the draws the model will spend
    on those positions (as the draft model does)."""

    cdf = np.cumsum([0.6, 0.3, 0.1])

    def propose(self, history, k, params, uniforms):
        return [int(np.searchsorted(self.cdf, u, "right")) for u in uniforms[:k]]


class OracleDrafter:
    """Greedy drafts that are right most of the time: the model's own argmax, every third one wrong."""

    def __init__(self, model: TableModel):
        self.model, self.calls = model, 0

    def propose(self, history, k, params, uniforms):
        self.calls += 1
        window, out = list(history[-self.model.block_size // 2:]), []
        for j in range(k):
            best = int(np.argmax(self.model._logits(tuple(window))))
            token = (best + 1) % 3 if (self.calls + j) % 3 == 0 else best
            out.append(token)
            window.append(token)
        return out


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(0.8, seed=7),
                                    SamplingParams(1.2, top_k=2, seed=8), SamplingParams(0.9, top_p=0.7, seed=9)],
                         ids=["greedy", "T=0.8", "top-k", "top-p"])
def test_the_text_is_plain_decodings_past_block_size(params):
    for seed in range(4):
        model = TableModel(block_size=16, seed=seed)
        prompt = [0, 1, 2, 1][:seed + 1]
        plain = generate(model, prompt, 70, Sampler(params))[0].tolist()
        for drafter in (OracleDrafter(model), FixedDrafter(), CoupledDrafter()):
            for k in (1, 3, 8):
                stats = SpeculativeStats()
                got = generate_speculative(model, prompt, 70, params, drafter, k, stats=stats, pacer=Pacer(False))
                assert got == plain, (seed, type(drafter).__name__, k)
                assert generate_speculative(model, prompt, 70, params, drafter, k) == plain  # drafting at times
                if isinstance(drafter, OracleDrafter) and params.temperature == 0:
                    assert stats.runs < 60  # its drafts were kept: fewer runs than characters


def exact_distribution(model: TableModel, prompt: list[int], n: int, params: SamplingParams) -> dict:
    """P(every continuation of n ids) under plain sampling: the product of the model's probabilities."""
    out = {(): 1.0}
    for _ in range(n):
        nxt = {}
        for seq, p in out.items():
            for t, q in enumerate(probabilities(model._logits(tuple(prompt) + seq), params)):
                if q > 0:
                    nxt[seq + (t,)] = p * q
        out = nxt
    return out


def chi_square(model, prompt, n, params, drafter, draws: int) -> float:
    exact = exact_distribution(model, prompt, n, params)
    counts: dict[tuple, int] = {}
    for seed in range(draws):
        got = tuple(generate_speculative(model, prompt, n, SamplingParams(params.temperature, params.top_k,
                                                                            params.top_p, seed), drafter, 3,
                                         pacer=Pacer(False)))
        counts[got] = counts.get(got, 0) + 1
    assert set(counts) <= set(exact)  # nothing the model could not have sampled
    return sum((counts.get(s, 0) - draws * p) ** 2 / (draws * p) for s, p in exact.items())


# <= 27 outcomes (3^3, fewer where top-k drops some): a chi-square with ~26 degrees of freedom has mean ~26 and sd
# ~7; 70 is past 6 sd, never reached by a correct rule (the draws are seeded: the test is deterministic).
LIMIT = 70
DRAWS = 4000
MODEL = TableModel(vocab_size=3, block_size=16)
DRAFTERS = {"fixed": FixedDrafter(), "argmax": ArgmaxDrafter(MODEL), "coupled sample": CoupledDrafter()}


@pytest.mark.parametrize("drafter", DRAFTERS.values(), ids=DRAFTERS.keys())
@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(0.8, top_k=2)], ids=["T=1", "T=0.8 top-k 2"])
def test_sampled_text_has_exactly_the_models_distribution(drafter, params):
    assert chi_square(MODEL, [0], 3, params, drafter, DRAWS) < LIMIT


def argmax_rule(rows, draft, params, uniforms):
    """Wrong: a draft is kept where it is the model's argmax; the model's own token is then sampled."""
    best = np.argmax(rows, axis=-1)
    n = next((j for j, x in enumerate(draft) if x != best[j]), len(draft))
    return n, int(model_tokens(rows[n:n + 1], params, uniforms[n:])[0])


def redraw_rule(rows, draft, params, uniforms):
    """Wrong: a draft x is kept with probability p(x), but a rejection draws afresh from p (x included), not from
    the residual (p without x)."""
    tokens = model_tokens(rows, params, uniforms)
    n = next((j for j, x in enumerate(draft) if x != tokens[j]), len(draft))
    if n == len(draft):
        return n, int(tokens[n])
    fresh = np.random.default_rng(int(uniforms[n] * 2**32)).random(1)
    return n, int(model_tokens(rows[n:n + 1], params, fresh)[0])


@pytest.mark.parametrize("rule", [argmax_rule, redraw_rule], ids=["argmax", "no residual"])
def test_a_wrong_accept_rule_fails_the_distribution_test(monkeypatch, rule):
    """The same statistic lands far past the limit when the rule is not the model's own choice per position."""
    import gpt.decode.speculative.loop as spec

    monkeypatch.setattr(spec, "accept_drafts", rule)
    assert chi_square(MODEL, [0], 3, SamplingParams(1.0), ArgmaxDrafter(MODEL), DRAWS) > 3 * LIMIT


def test_same_seed_same_text_and_seeds_differ():
    model = TableModel(vocab_size=3, block_size=16)
    texts = [generate_speculative(model, [0], 40, SamplingParams(0.8, seed=s), FixedDrafter(), 4) for s in (1, 1, 2)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


def test_the_speculative_loop_refuses_bad_input_naming_its_parameters():
    model = TableModel(vocab_size=3, block_size=16)
    with pytest.raises(GPTError, match=r"^max_new_tokens must be in \[0, 1,000,000\], got -1$"):
        generate_speculative(model, [0], -1, SamplingParams(), FixedDrafter(), 4)
    with pytest.raises(GPTError, match=r"^draft_tokens must be in \[1, 8\] \(block_size 16 / 2\), got 9$"):
        generate_speculative(model, [0], 5, SamplingParams(), FixedDrafter(), 9)
    with pytest.raises(GPTError, match="the prompt must hold at least one token"):
        generate_speculative(model, [], 5, SamplingParams(), FixedDrafter(), 4)


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
    assert "".join(vocab[i] for i in draft) == "fox ju"
    unseen = [stoi[c] for c in "XYZZY XYZZY XYZ"]  # not in the training text: only the text so far knows it
    assert "".join(vocab[i] for i in drafter.propose(unseen, 3, SamplingParams(0), None)) == "ZY "
    assert self_match(bytes([1, 2, 3, 1, 2])) == (2, 2)
    assert drafter.propose([stoi["X"]], 4, SamplingParams(0), None) == []  # unsure: no draft


def test_ngram_index_round_trips_and_is_checked(tmp_path):
    from gpt.decode.speculative.ngram import INDEX_FILE, open_index
    from gpt.errors import GPTError

    vocab = sorted(set(PERIODIC_TEXT))
    model = tmp_path / "model.onnx"
    index = open_index(model, vocab, "a" * 64, PERIODIC_TEXT[:5000], "a" * 64, say=lambda _: None)
    again = open_index(model, vocab, "a" * 64)
    assert (tmp_path / INDEX_FILE).is_file() and (again.suffixes == index.suffixes).all()
    with pytest.raises(GPTError, match="indexes another training text"):
        open_index(model, vocab, "b" * 64)
    with pytest.raises(GPTError, match="another vocabulary"):
        open_index(model, vocab[:-1], "a" * 64)


# ---- the distilled drafter -------------------------------------------------------------------------------

def test_the_distilled_table_holds_the_models_mean_distribution_after_each_context():
    """A lookup gives the mean of the model's distributions after every occurrence of the longest suffix of the
    context that occurs at least min_count times (at most MAX_CONTEXT characters); none where even one
    character is rarer."""
    from gpt.decode.speculative.distilled import MAX_CONTEXT, DistilledDrafter, DistilledTable

    V, block = 4, 16
    rng = np.random.default_rng(0)
    ids = rng.choice(3, 40 * block, p=[0.5, 0.3, 0.2])
    ids[[100, 300]] = 3  # a character seen twice: under min_count
    logits = rng.standard_normal((40, block, V)).astype(np.float32)
    done = []  # windows run so far: the build runs them in order, a few at a time

    def model(windows: np.ndarray) -> np.ndarray:
        assert (windows.reshape(-1) == ids[len(done) * block:(len(done) + len(windows)) * block]).all()
        done.extend(windows)
        return logits[len(done) - len(windows):len(done)]

    table = DistilledTable.build(model, block, ids, list("abcd"), "t", "m", say=lambda _: None, min_count=3)
    probs = np.exp(logits.reshape(-1, V)) / np.exp(logits.reshape(-1, V)).sum(-1, keepdims=True)

    def ends(suffix: list[int]) -> list[int]:
        n = len(suffix)
        return [i for i in range(n - 1, len(ids)) if ids[i - n + 1:i + 1].tolist() == suffix]

    for trial in range(40):
        context = ids[trial * 13:trial * 13 + 12].tolist() if trial % 2 else rng.choice(3, 12).tolist()
        n = max(n for n in range(MAX_CONTEXT + 1) if n == 0 or len(ends(context[-n:])) >= 3)
        want = np.log(probs[ends(context[-n:])].mean(axis=0))
        np.testing.assert_allclose(table.lookup(context).astype(np.float64), want, atol=3e-3)
    assert table.lookup([0, 1, 3]) is None

    drafter = DistilledDrafter(table)  # each draft: the sampler on the looked-up row, with that position's draw
    for params in (SamplingParams(0.0), SamplingParams(1.0), SamplingParams(0.7, top_k=2)):
        for trial in range(20):
            history, draws = rng.choice(3, 10).tolist(), rng.random(4)
            draft = drafter.propose(history, 4, params, draws)
            context = list(history)
            for j, token in enumerate(draft):
                row = table.lookup(context)[None].astype(np.float64)
                want = sample_tokens(row, np.array([params.temperature]), np.array([params.top_k]),
                                     np.array([params.top_p]), draws[j:j + 1])
                assert token == int(want[0]), (params, trial, j)
                context.append(token)
            assert len(draft) == 4 or table.lookup(context) is None  # fewer only where no context is held
    seen = {tuple(drafter.propose([0, 1, 2], 1, SamplingParams(1.0), np.array([u]))) for u in np.linspace(0, 0.99, 12)}
    assert len(seen) > 1  # the draws choose among the row's characters


def test_the_distilled_table_round_trips_and_is_made_again_for_another_model(real_model, shakespeare_slice, tmp_path):
    import shutil

    from gpt.data import sha256_of
    from gpt.decode.backends.ort_decoder import open_onnx
    from gpt.decode.speculative.distilled import TABLE_FILE
    from gpt.decode.speculative.drafters import open_drafter
    from gpt.errors import GPTError

    model, _ = real_model
    shutil.copyfile(model.path, tmp_path / "model.onnx")
    copy = open_onnx(tmp_path / "model.onnx", threads=1)
    made = open_drafter("distilled", copy, ngram_text=shakespeare_slice, say=lambda _: None)
    again = open_drafter("distilled", copy, say=lambda _: None)  # read back: no text needed
    assert (tmp_path / TABLE_FILE).is_file()
    assert [k.tolist() for k in again.table.keys] == [k.tolist() for k in made.table.keys]
    with open(tmp_path / "model.onnx", "ab") as f:
        f.write(b"\x32\x05again")  # a doc_string (ModelProto field 6): another file, still a model
    said = []
    remade = open_drafter("distilled", copy, ngram_text=shakespeare_slice, say=said.append)
    assert any("was distilled from another model file" in line and "distilling it again" in line for line in said)
    assert remade.table.model_sha256 == sha256_of(tmp_path / "model.onnx")
    assert open_drafter("distilled", copy, say=lambda _: None).table.model_sha256 == remade.table.model_sha256
    (tmp_path / TABLE_FILE).write_bytes(b"not a table")
    with pytest.raises(GPTError, match="is not a readable distilled table .* delete it and it is made again"):
        open_drafter("distilled", copy, say=lambda _: None)


# ---- on the exported file ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_model(shakespeare_ckpt, shakespeare_slice, tmp_path_factory):
    """The tiny model trained on real text (its logits are not near-certain), exported in the gqa layout, with
    its ngram index built from that text."""
    from conftest import run_module

    from gpt.decode.backends.ort_decoder import open_onnx
    from gpt.decode.speculative.drafters import open_drafter

    out = tmp_path_factory.mktemp("spec") / "model.onnx"
    r = run_module("export.onnx", "--ckpt", str(shakespeare_ckpt), "--out", str(out), "--threads", "1",
                   "--quantize", "int8")  # model.int8.onnx: a slightly different model, to draft with
    assert r.returncode == 0, r.stderr
    model = open_onnx(out, threads=1)
    return model, open_drafter("ngram", model, ngram_text=shakespeare_slice, say=lambda _: None)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(0.8, seed=3),
                                    SamplingParams(1.0, top_k=5, top_p=0.9, seed=4)],
                         ids=["greedy", "T=0.8", "top-k+p"])
def test_the_exported_model_writes_plain_decodings_text_with_ngram_drafts(real_model, params):
    """Several prompts, 150 characters each: past block_size 32 four times, through re-prefills."""
    from gpt.tokenizer import CharTokenizer

    model, drafter = real_model
    tok = CharTokenizer(model.vocab)
    kept = 0
    for prompt in ("ROMEO:\n", "First Citizen:\nWe are", "the "):
        ids = tok.encode(prompt)
        plain = generate(model, ids, 150, Sampler(params))[0].tolist()
        stats = SpeculativeStats()
        assert generate_speculative(model, ids, 150, params, drafter, 4, stats=stats, pacer=Pacer(False)) == plain
        assert generate_speculative(model, ids, 150, params, drafter, 4) == plain, prompt  # drafting while it pays
        kept += sum(stats.accepted)
    assert kept > 30  # the drafts did something


def test_the_engine_speculating_writes_the_text_it_writes_without(real_model, shakespeare_slice):
    """Alone (speculating) and five at once (past speculate_rows: plain batched steps), greedy and seeded: the
    same texts as the engine without a drafter, and as gpt.decode.loop; the drafts were kept."""
    from gpt.engine import Engine, GenerationParams

    model, _ = real_model
    prompts = ["ROMEO:\n", "First Citizen:\nWe are", "the ", "KING", "O"]
    for params in (GenerationParams(max_tokens=90, temperature=0, timeout=60),
                   GenerationParams(max_tokens=90, temperature=0.9, seed=5, timeout=60)):  # bounded, whatever breaks
        with Engine(model.path, slots=8, threads=1) as plain:
            want = plain.generate(prompts, params)
        with Engine(model.path, slots=8, threads=1, speculative="ngram", speculate_rows=2, adaptive=False,
                    ngram_text=shakespeare_slice) as engine:
            alone = [engine.generate([p], params)[0] for p in prompts]
            assert engine.stats()["draft_accepted"] > 20
            runs = engine.stats()["draft_runs"]
            together = engine.generate(prompts, params)
            assert engine.stats()["draft_runs"] - runs < 90  # five rows: mostly plain steps
        assert alone == want and together == want


def test_the_server_speculates_shows_it_in_metrics_and_refuses_a_bad_draft_tokens(real_model, shakespeare_slice):
    """`gpt.serve --speculative ngram`: a greedy and a seeded request give the text of a server without it (and the
    engine's), /metrics counts the accepted drafts, a request's `draft_tokens` past block_size / 2 is a 400 naming
    the field, and the next request is served."""
    import httpx
    from servers import server_process

    model, _ = real_model
    bodies = [{"model": "model", "prompt": "ROMEO:\n", "max_tokens": 60, "temperature": 0},
              {"model": "model", "prompt": "the ", "max_tokens": 60, "temperature": 0.9, "seed": 4}]
    texts = {}
    for args in ((), ("--speculative", "ngram", "--ngram-text", str(shakespeare_slice))):
        with server_process(model.path, "--model-name", "model", *args) as (url, _):
            texts[args] = [httpx.post(f"{url}/v1/completions", json=b, timeout=30).json()["choices"][0]["text"]
                           for b in bodies]
            if args:
                bad = httpx.post(f"{url}/v1/completions", json={**bodies[0], "draft_tokens": 17}, timeout=30)
                assert bad.status_code == 400 and bad.json()["error"]["param"] == "draft_tokens", bad.text
                assert "draft_tokens must be in [0, 16]" in bad.json()["error"]["message"]
                off = httpx.post(f"{url}/v1/completions", json={**bodies[1], "draft_tokens": 0}, timeout=30)
                assert off.json()["choices"][0]["text"] == texts[args][1]
                metrics = httpx.get(f"{url}/metrics", timeout=10).text
                counted = {line.split()[0]: float(line.split()[-1]) for line in metrics.splitlines()
                           if line.startswith("gpt_draft_")}
                assert counted["gpt_draft_runs"] > 0 and counted["gpt_draft_proposed"] > 0
                assert counted["gpt_draft_accepted"] <= counted["gpt_draft_proposed"]
    assert texts[()] == list(texts.values())[1]
    assert len(set(texts[()])) == 2 and all(len(t) == 60 for t in texts[()])


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(0.8, seed=3),
                                    SamplingParams(1.0, top_k=5, top_p=0.9, seed=4)],
                         ids=["greedy", "T=0.8", "top-k+p"])
def test_the_exported_model_writes_plain_decodings_text_with_distilled_drafts(real_model, shakespeare_slice, params):
    """The distilled drafter samples its drafts with the model's own draws: the text stays plain decoding's, and at
    T = 0.8 more of its drafts are kept than the ngram drafter's on the same prompts."""
    from gpt.decode.speculative.drafters import open_drafter
    from gpt.tokenizer import CharTokenizer

    model, ngram = real_model
    distilled = open_drafter("distilled", model, ngram_text=shakespeare_slice, say=lambda _: None)
    tok = CharTokenizer(model.vocab)
    kept = {"distilled": 0, "ngram": 0}
    for prompt in ("ROMEO:\n", "First Citizen:\nWe are", "the "):
        ids = tok.encode(prompt)
        plain = generate(model, ids, 150, Sampler(params))[0].tolist()
        for name, drafter in (("distilled", distilled), ("ngram", ngram)):
            stats = SpeculativeStats()
            assert generate_speculative(model, ids, 150, params, drafter, 4, stats=stats, pacer=Pacer(False)) == plain
            kept[name] += sum(stats.accepted)
        assert generate_speculative(model, ids, 150, params, distilled, 4) == plain, prompt  # drafting while it pays
    assert kept["distilled"] > 100
    if params.temperature == 0.8:
        assert kept["distilled"] > kept["ngram"], kept


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(0.8, seed=5)],
                         ids=["greedy", "T=0.8"])
def test_a_draft_model_drafts_and_the_text_stays_plain_decodings(real_model, params):
    """The int8 copy of the model drafts for it (same vocabulary and block size, slightly different logits): the
    text is plain decoding's past block_size, most drafts are kept, some are not."""
    from gpt.decode.speculative.drafters import open_drafter
    from gpt.tokenizer import CharTokenizer

    model, _ = real_model
    drafter = open_drafter(str(model.path.with_name("model.int8.onnx")), model, threads=1)
    ids = CharTokenizer(model.vocab).encode("ROMEO:\n")
    plain = generate(model, ids, 120, Sampler(params))[0].tolist()
    stats = SpeculativeStats()
    assert generate_speculative(model, ids, 120, params, drafter, 4, stats=stats, pacer=Pacer(False)) == plain
    assert sum(stats.accepted) > 0.5 * sum(stats.proposed) and stats.runs < 120


def test_sample_cli_speculates_prints_the_same_text_and_shows_what_was_accepted(real_model, shakespeare_slice):
    from conftest import run_module

    model, _ = real_model
    common = ("--backend", "onnxruntime", "--onnx", str(model.path), "--prompt", "ROMEO:", "--max-new-tokens", "200",
              "--temperature", "0.8", "--seed", "3", "--threads", "1")
    plain = run_module("gpt.sample", *common)
    spec = run_module("gpt.sample", *common, "--speculative", "ngram", "--ngram-text", str(shakespeare_slice),
                      "--stats", "--show-accepted")
    assert plain.returncode == 0 and spec.returncode == 0, spec.stderr
    green, reset = "\x1b[32m", "\x1b[0m"
    kept = int(spec.stderr.split("drafts accepted ")[1].split()[0])
    assert (green in spec.stdout) == (kept > 0)  # drafting stops where it does not pay: it may not have started
    assert spec.stdout.replace(green, "").replace(reset, "") == plain.stdout
    assert "characters per run" in spec.stderr and "runs by drafts accepted: 0:" in spec.stderr


def test_gpt_load_speculates(real_model, shakespeare_slice):
    import gpt

    model, _ = real_model
    fast = gpt.load(model.path, speculative="ngram", ngram_text=shakespeare_slice, threads=1)
    plain = gpt.load(model.path, threads=1)
    assert fast.generate("the ", 100, temperature=0.7, seed=2) == plain.generate("the ", 100, temperature=0.7, seed=2)
    assert sum(fast.stats.proposed) > 0


def test_gpt_load_names_its_parameters_not_the_flags(real_model, shakespeare_slice):
    import gpt

    model, _ = real_model
    with pytest.raises(GPTError, match=r"^draft_tokens must be in \[1, \d+\] \(block_size \d+ / 2\), got 0$"):
        gpt.load(model.path, speculative="ngram", ngram_text=shakespeare_slice, draft_tokens=0, threads=1)
    fast = gpt.load(model.path, speculative="ngram", ngram_text=shakespeare_slice, threads=1)
    with pytest.raises(GPTError, match=r"^max_new_tokens must be in \[0, 1,000,000\], got -1$"):
        fast.generate("the ", max_new_tokens=-1)


def test_the_pacer_weighs_rounds_by_the_characters_they_keep():
    """Drafting rounds that keep 1, 1, 1 and 5 characters in 1.3 s each cost 0.65 s a character, less than plain
    rounds at 1 s: the pacer drafts (the mean of each round's seconds per character, 1.04, would say it does
    not pay). Where drafts cost 1.2 s a character it stops, and probes drafting again at its PROBE-th round."""
    pacer = Pacer()
    for drafted, kept, seconds in [(False, 1, 1.0)] * 4 + [(True, 1, 1.3), (True, 1, 1.3), (True, 1, 1.3),
                                                          (True, 5, 1.3)]:
        pacer.record(drafted, kept, seconds)
    assert pacer.drafts(4) == 4
    slow = Pacer()
    for drafted, kept, seconds in [(False, 1, 1.0)] * 4 + [(True, 2, 2.4)] * 4:
        slow.record(drafted, kept, seconds)
    asked = [slow.drafts(4) for _ in range(Pacer.PROBE)]
    assert asked[:-1] == [0] * (Pacer.PROBE - 1) and asked[-1] == 4


def test_a_large_model_distils_from_every_nth_window():
    """A strided pass runs the model on windows 0, stride, 2 stride, ... only, and keeps their contexts."""
    from gpt.decode.speculative.distilled import DistilledTable

    block, ids = 4, np.arange(40) % 3
    seen = []

    def model(windows: np.ndarray) -> np.ndarray:
        seen.extend(w.tolist() for w in windows)
        return np.zeros((*windows.shape, 3), dtype=np.float32)

    DistilledTable.build(model, block, ids, list("abc"), "t", "m", say=lambda _: None, min_count=1, stride=3)
    assert seen == [ids[i * block:(i + 1) * block].tolist() for i in (0, 3, 6, 9)]


def test_a_drafter_is_made_only_from_the_models_own_training_text(tmp_path):
    """ngram and distilled alike: the text read to make their file is checked against the sha256 the export
    recorded; once the file exists beside the model, no text is read."""
    import hashlib

    from gpt.decode.speculative.drafters import train_split
    from gpt.errors import GPTError

    text = tmp_path / "input.txt"
    text.write_text(PERIODIC_TEXT[:3000])
    ours = hashlib.sha256(PERIODIC_TEXT[:3000].encode()).hexdigest()
    model = tmp_path / "model.onnx"
    assert train_split(text, tmp_path, model, "ngram.npz", ours)[1] == ours
    with pytest.raises(GPTError, match="is not the one the model was trained on .*pass that one with --ngram-text"):
        train_split(text, tmp_path, model, "distilled.npz", "0" * 64)
    (tmp_path / "distilled.npz").write_bytes(b"")
    assert train_split(text, tmp_path, model, "distilled.npz", "0" * 64) == (None, None)
