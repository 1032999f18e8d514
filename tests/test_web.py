"""The web page (`python -m export.web`) in a real headless Chromium, against the Python sampler.

The site is built from the tiny model's two exports, served on loopback by `export.web --serve`'s server (with
the COOP/COEP headers), and driven by Selenium with Debian's chromium + chromium-driver: greedy text past block_size
must equal `python -m gpt.sample --backend onnxruntime --temperature 0` on the same file. The loop of gpt.js is also
checked call by call against gpt.decode.loop under Node, with a decoder that records what it is asked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import run_module

from export.static_server import make_server
from export.web import check_on_wasm, pinned_version
from gpt.decode.backends.ort_session import open_session
from gpt.decode.loop import generate
from gpt.decode.sampler import Sampler, SamplingParams, filter_logits
from gpt.errors import GPTError

PROMPT = "ROMEO:"
TIMEOUT = 120  # seconds for the page to load or to generate, on a busy 2-core machine


@pytest.fixture(scope="module")
def sites(exported, exported_std, tmp_path_factory) -> dict[str, Path]:
    """layout -> a site built by `export.web` from the tiny model's export in that layout."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed (Debian: apt-get install nodejs npm); export.web needs them")
    root = tmp_path_factory.mktemp("sites")
    out = {}
    for layout, onnx in (("onnx", exported_std), ("gqa", exported[0])):
        r = run_module("export.web", "--onnx", str(onnx), "--out", str(root / layout), timeout=600)
        assert r.returncode == 0, r.stderr
        assert f"({layout} layout" in r.stdout, r.stdout
        out[layout] = root / layout
    return out


@pytest.fixture(scope="module")
def urls(sites) -> Iterator[dict[str, str]]:
    servers = {layout: make_server(site, port=0, quiet=True) for layout, site in sites.items()}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {layout: f"http://127.0.0.1:{s.server_address[1]}/" for layout, s in servers.items()}
    for server in servers.values():
        server.shutdown()
        server.server_close()


def state(browser) -> str:
    return browser.execute_script("return document.body.dataset.state || ''")


def wait_for(browser, states: tuple[str, ...]) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, TIMEOUT).until(lambda b: state(b) in states)
    return state(browser)


def run_page(browser, url: str, **fields: str) -> dict[str, str]:
    """Load the page, fill in the form (ids as keys, `top_k` for `top-k`), press Generate, wait for the end."""
    browser.get(url)
    assert wait_for(browser, ("ready", "error")) == "ready", browser.find_element("id", "error").text
    browser.execute_script("for (const [k, v] of Object.entries(arguments[0])) "
                           "document.getElementById(k.replace('_', '-')).value = v;", fields)
    browser.find_element("id", "generate").click()
    wait_for(browser, ("done", "error"))
    return {name: browser.execute_script(f"return document.getElementById('{name}').textContent")
            for name in ("output", "error", "stats", "model")} | {"state": state(browser)}


@pytest.mark.parametrize("layout", ["onnx", "gqa"])
def test_greedy_text_in_chromium_equals_the_python_sampler(browser, urls, sites, layout):
    n = str(3 * 32)  # tiny_ckpt has block_size 32: the window slides and re-prefills twice
    onnx = sites[layout] / "model.onnx"
    python = run_module("gpt.sample", "--backend", "onnxruntime", "--onnx", str(onnx), "--prompt", PROMPT,
                        "--max-new-tokens", n, "--temperature", "0", "--threads", "1")
    assert python.returncode == 0, python.stderr
    threads = {"onnx": 1, "gqa": 2}[layout]  # one thread, and wasm's worker threads (SharedArrayBuffer)
    page = run_page(browser, f"{urls[layout]}?threads={threads}", prompt=PROMPT, length=n, temperature="0")
    assert page["state"] == "done" and page["error"] == "", page
    assert page["output"] + "\n" == python.stdout
    assert f"{layout} layout" in page["model"]
    assert f"onnxruntime-web {pinned_version()} wasm, {threads} thread" in page["model"]
    assert f"{n} tokens in" in page["stats"] and "tok/s" in page["stats"]
    assert browser.execute_script("return self.crossOriginIsolated")  # the static server sent COOP/COEP


def test_sampling_is_seeded_and_stays_in_the_vocabulary(browser, urls, sites):
    """Sampled text need not match Python's (another RNG), but one seed gives one text."""
    options = dict(prompt="the", length="50", temperature="1.5", top_k="5", top_p="0.9", seed="7")
    first, again = run_page(browser, urls["onnx"], **options), run_page(browser, urls["onnx"], **options)
    assert first["state"] == "done" and first["output"] == again["output"], (first, again)
    vocab = open_session(sites["onnx"] / "model.onnx", threads=1)[1].vocab
    assert first["output"].startswith("the") and len(first["output"]) == 53 and set(first["output"]) <= set(vocab)
    hot = {**options, "temperature": "5", "top_k": "0", "top_p": "1"}  # near-uniform: seeds must differ
    texts = [run_page(browser, urls["onnx"], **{**hot, "seed": seed})["output"] for seed in ("7", "8")]
    assert texts[0] != texts[1]


def test_prompt_outside_the_vocabulary_is_a_clear_message(browser, urls):
    page = run_page(browser, urls["onnx"], prompt="ROMEO#\u00e9", length="10", temperature="0")
    assert page["state"] == "error" and page["output"] == ""
    assert "the prompt has 2 character(s) not in the model's vocabulary: \"#\", \"\u00e9\"" in page["error"]


def test_generation_loop_matches_gpt_generate_call_by_call(sites):
    """gpt.js's `generate` and gpt.decode.loop's, on a decoder that logs each call and answers a fixed token per
    call: the same prefill windows and steps, for lengths up to and past 3 x block_size."""
    block, vocab, prompt = 8, 5, [1, 2, 3]
    script = f"""
        import {{ generate, makeSampler }} from {json.dumps((sites['onnx'] / 'gpt.js').as_uri())};
        const logs = [];
        for (const n of [0, 1, 5, 6, 7, 24, 30]) {{
          const log = [];
          const answer = () => {{ const x = new Float32Array({vocab}); x[(log.length * 3) % {vocab}] = 1; return x; }};
          const decoder = {{ blockSize: {block},
            prefill: async (ids) => {{ log.push(['prefill', [...ids]]); return answer(); }},
            step: async (id) => {{ log.push(['step', id]); return answer(); }} }};
          const out = [];
          const sampler = makeSampler({{ temperature: 0, topK: 0, topP: 1, seed: 0 }});
          for await (const t of generate(decoder, {prompt}, n, sampler)) out.push(t);
          logs.push([log, out]);
        }}
        console.log(JSON.stringify(logs));
    """
    r = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr

    class Recorder:
        block_size = block

        def __init__(self):
            self.log = []

        def answer(self) -> np.ndarray:
            x = np.zeros((1, vocab), dtype=np.float32)
            x[0, (len(self.log) * 3) % vocab] = 1
            return x

        def prefill(self, ids):
            self.log.append(["prefill", ids[0].tolist()])
            return self.answer()

        def step(self, ids):
            self.log.append(["step", int(ids[0, 0])])
            return self.answer()

    expected = []
    for n in (0, 1, 5, 6, 7, 24, 30):
        decoder = Recorder()
        out = generate(decoder, prompt, n, Sampler(SamplingParams(temperature=0)))
        expected.append([decoder.log, out[0].tolist()])
    assert json.loads(r.stdout) == expected


def test_top_k_and_top_p_keep_the_tokens_gpt_generate_keeps(sites):
    """gpt.js's filterLogits against gpt.decode.loop.filter_logits on random logits (rounded, so with ties)."""
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(300):
        V = int(rng.integers(2, 70))
        top_p = 1.0 if rng.random() < 0.3 else float(rng.uniform(0.01, 1))
        cases.append([np.round(rng.normal(0, 3, V), 1).tolist(), int(rng.integers(0, V + 2)), top_p])
    script = f"""
        import {{ readFileSync }} from 'node:fs';
        import {{ filterLogits }} from {json.dumps((sites['onnx'] / 'gpt.js').as_uri())};
        const cases = JSON.parse(readFileSync(0, 'utf8'));
        console.log(JSON.stringify(cases.map(([x, k, p]) => filterLogits(x, k, p).map(Number.isFinite))));
    """
    r = subprocess.run(["node", "--input-type=module", "-e", script], input=json.dumps(cases), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    expected = [np.isfinite(filter_logits(np.array([x]), k, p))[0].tolist() for x, k, p in cases]
    assert json.loads(r.stdout) == expected


def test_a_model_wasm_cannot_run_is_one_line(sites, tmp_path):
    site = tmp_path / "site"
    shutil.copytree(sites["onnx"], site)
    data = (site / "model.onnx").read_bytes()
    (site / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(GPTError, match=rf"cannot run on onnxruntime-web {pinned_version()} \(wasm\): ") as e:
        check_on_wasm(site, Path("broken.onnx"))
    assert "\n" not in str(e.value) and "--attention onnx" in str(e.value)
