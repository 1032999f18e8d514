"""The web page's explorer in headless Chromium: what it shows is the model's own numbers.

The tiny model is exported with its explain graph (`export.onnx --attention onnx --explain`), the site built by
`export.web`, and the page pointed at characters: the weights, scores, probabilities and lens it displays (read
from their data-* attributes) must equal gpt.inspect's trace of the same text (1e-4) and the torch model's softmax
(1e-5); its mechanism view's softmax (computed in the page from q and k) must equal the head view's weights (the
graph's); its sliders must filter as gpt.decode.sampler does. Writing with the explorer following must keep at
least half the page's speed without it.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PERIODIC_TEXT, run_module
from test_web import TIMEOUT, wait_for

from export.explain import export_explain_proto
from export.static_server import make_server
from export.web import check_on_wasm
from gpt.decode.sampler import filter_logits, softmax
from gpt.errors import GPTError
from gpt.inspect.analysis import logit_lens
from gpt.inspect.capture import recording, trace
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint

TEXT = PERIODIC_TEXT[4:36]  # block_size (32) characters: the whole context
ROOT = Path(__file__).resolve().parents[1]


def build_site(ckpt: Path, root: Path) -> Path:
    """`export.onnx --attention onnx --explain`, then `export.web`: the site with its explorer."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("Node.js and npm are not installed (Debian: apt-get install nodejs npm); export.web needs them")
    onnx = root / "model.onnx"
    r = run_module("export.onnx", "--ckpt", str(ckpt), "--out", str(onnx), "--attention", "onnx", "--explain",
                   "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert f"explain: {onnx.with_name('model.explain.onnx')}" in r.stdout
    r = run_module("export.web", "--onnx", str(onnx), "--out", str(root / "site"), timeout=600)
    assert r.returncode == 0, r.stderr
    assert "explorer: explain.onnx" in r.stdout and (root / "site" / "explain.onnx").is_file()
    return root / "site"


@pytest.fixture(scope="module")
def site(tiny_ckpt, exported_std, tmp_path_factory) -> Path:
    site = build_site(tiny_ckpt, tmp_path_factory.mktemp("explain"))
    assert (site / "model.onnx").read_bytes() == exported_std.read_bytes()  # the sampling file pays nothing
    return site


@contextmanager
def serving(site: Path) -> Iterator[str]:
    server = make_server(site, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def url(site) -> Iterator[str]:
    with serving(site) as address:
        yield address


@pytest.fixture(scope="module")
def reference(tiny_ckpt) -> dict:
    """gpt.inspect's numbers for TEXT: the trace, the logit lens, and q and k as the layers split them."""
    model, tokenizer, _ = load_checkpoint(tiny_ckpt)
    ids = tokenizer.encode(TEXT)
    t = trace(model, ids)
    with recording(model) as r, torch.no_grad():
        model(torch.tensor([ids]))
    q, k, _ = r.heads()
    return {"trace": t, "lens": logit_lens(model, t), "scores": q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)),
            "heads_out": t.attention @ t.values, "vocab": tokenizer.itos}


def js(browser, script: str, *args):
    return browser.execute_script(script, *args)


def explain_text(browser, url: str, text: str) -> None:
    browser.get(url)
    assert wait_for(browser, ("ready", "error")) == "ready", browser.find_element("id", "error").text
    assert js(browser, "return !document.getElementById('explorer').hidden")
    js(browser, "document.getElementById('prompt').value = arguments[0];", text)
    before = passes(browser)
    browser.find_element("id", "x-explain").click()
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, TIMEOUT).until(lambda b: passes(b) > before)


def passes(browser) -> int:
    """How many times the explorer has run the explain graph and redrawn since the page loaded."""
    return int(js(browser, "return document.getElementById('explorer').dataset.passes || '0'"))


def choose(browser, layer: int, head: int) -> None:
    js(browser, "for (const [id, v] of [['x-layer', arguments[0]], ['x-head', arguments[1]]]) {"
                "  const s = document.getElementById(id); s.value = String(v);"
                "  s.dispatchEvent(new Event('change')); }", layer, head)


def shown(browser) -> dict:
    """Every number the views display, from their data-* attributes (strings: full precision)."""
    return js(browser, """
        const all = (sel, f) => [...document.querySelectorAll(sel)].map(f);
        return {
          pos: document.getElementById('explorer').dataset.pos,
          head: all('#x-text .ch', (s) => s.dataset.weights.split(' ')),
          model: all('#x-model canvas', (c) => [c.dataset.layer, c.dataset.head, c.dataset.row]),
          mech: all('#x-mech .mrow[data-key]', (r) => [r.dataset.score, r.dataset.weight, r.classList[1]]),
          out: all('#x-mech .strip[data-name="out"] span', (s) => s.dataset.value),
          next: all('#x-next tbody tr', (r) => [r.dataset.id, r.dataset.prob, r.dataset.sampled]),
          lens: all('#x-lens tbody tr', (r) => all(`#x-lens tr[data-depth="${r.dataset.depth}"] td`,
                                                   (d) => [d.dataset.id, d.dataset.prob])),
        };""")


def floats(values) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_the_explorer_shows_the_models_numbers(browser, url, reference):
    t, lens, scores = reference["trace"], reference["lens"].double(), reference["scores"].double()
    attention = t.attention.double()
    L, H, T, _ = attention.shape
    explain_text(browser, url, TEXT)
    for pos in (0, 9, T - 1):
        browser.find_element("css selector", f'#x-text .ch[data-pos="{pos}"]').click()  # pin it
        for layer in range(L):
            for head in range(H):
                choose(browser, layer, head)
                view = shown(browser)
                assert int(view["pos"]) == pos
                weights = floats(view["head"])  # [T keys, H]: the bars under each character
                np.testing.assert_allclose(weights.T, attention[layer, :, pos].numpy(), rtol=0, atol=1e-4)
                rows = {(int(a), int(b)): floats(json.loads(r)) for a, b, r in view["model"]}
                assert sorted(rows) == [(a, b) for a in range(L) for b in range(H)]
                for (a, b), row in rows.items():
                    np.testing.assert_allclose(row, attention[a, b, pos, :pos + 1].numpy(), rtol=0, atol=1e-4)
                mech = view["mech"]
                assert [c for _, _, c in mech] == ["visible"] * (pos + 1) + ["masked"] * (T - pos - 1)
                mech_weights = floats([w for _, w, _ in mech])
                np.testing.assert_allclose(mech_weights, weights[:, head], rtol=0, atol=1e-6)  # page == graph
                np.testing.assert_allclose(floats([s for s, _, _ in mech])[:pos + 1],
                                           scores[layer, head, pos, :pos + 1].numpy(), rtol=0, atol=1e-4)
                np.testing.assert_allclose(floats(view["out"]), reference["heads_out"][layer, head, pos].numpy(),
                                           rtol=0, atol=1e-4)
        probs = torch.softmax(t.logits[pos].double(), dim=-1).numpy()
        ids = [int(i) for i, _, _ in view["next"]]
        assert ids == list(np.argsort(-probs, kind="stable")[:10])
        np.testing.assert_allclose(floats([p for _, p, _ in view["next"]]), probs[ids], rtol=0, atol=1e-5)
        assert [p for _, p, _ in view["next"]] == [s for _, _, s in view["next"]]  # sliders at 1, off, off
        assert len(view["lens"]) == L + 1
        for depth, cells in enumerate(view["lens"]):
            top = [int(i) for i, _ in cells]
            assert top == lens[depth, pos].argsort(descending=True, stable=True)[:3].tolist()
            np.testing.assert_allclose(floats([p for _, p in cells]), lens[depth, pos, top].numpy(), rtol=0,
                                       atol=1e-4)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.8, 0, 1.0), (1.8, 5, 1.0), (1.8, 0, 0.6), (0.6, 3, 0.95)])
def test_the_sliders_filter_as_the_sampler_does(browser, url, reference, temperature, top_k, top_p):
    t = reference["trace"]
    explain_text(browser, url, TEXT)
    pos = 9
    browser.find_element("css selector", f'#x-text .ch[data-pos="{pos}"]').click()
    js(browser, "for (const [id, v] of Object.entries(arguments[0])) {"
                "  const s = document.getElementById(id); s.value = String(v); s.dispatchEvent(new Event('input')); }",
       {"x-temperature": temperature, "x-top-k": top_k, "x-top-p": top_p})
    view = shown(browser)
    logits = t.logits[pos].double().numpy()
    expected = softmax(filter_logits((logits - logits.max()) / temperature, top_k, top_p))
    ids = [int(i) for i, _, _ in view["next"]]
    sampled = floats([s for _, _, s in view["next"]])
    np.testing.assert_allclose(sampled, expected[ids], rtol=0, atol=1e-5)
    np.testing.assert_allclose(floats([p for _, p, _ in view["next"]]), softmax(logits)[ids], rtol=0, atol=1e-5)
    assert np.abs(expected - softmax(logits)).max() > 0.01  # each case moves the distribution


def write(browser, length: int, follow: bool) -> dict:
    js(browser, "document.getElementById('x-on').checked = arguments[1];"
                "for (const [k, v] of Object.entries(arguments[0])) document.getElementById(k).value = v;",
       {"prompt": "ROMEO:", "length": str(length), "temperature": "0"}, follow)
    before = passes(browser)
    browser.find_element("id", "generate").click()
    assert wait_for(browser, ("done", "error")) == "done", browser.find_element("id", "error").text
    stats = js(browser, "return document.getElementById('stats').textContent")
    return {"rate": float(stats.split("(")[1].split(" tok/s")[0]), "passes": passes(browser) - before,
            "output": js(browser, "return document.getElementById('output').textContent")}


def test_the_explorer_follows_the_writing_at_half_the_speed_or_better(browser, url, tiny_ckpt):
    explain_text(browser, url, "ROMEO:")
    page = write(browser, 600, follow=True)
    assert page["passes"] >= 3  # passes while writing, and one at the end
    tail = page["output"][-32:]
    view = shown(browser)
    assert js(browser, "return [...document.querySelectorAll('#x-text .ch')].map((s) => s.textContent).join('')"
              ) == tail.replace("\n", "\u21b5")
    assert int(view["pos"]) == len(tail) - 1  # it follows the newest character
    model, tokenizer, _ = load_checkpoint(tiny_ckpt)
    attention = trace(model, tokenizer.encode(tail)).attention.double()
    np.testing.assert_allclose(floats(view["head"]).T, attention[0, :, -1].numpy(), rtol=0, atol=1e-4)
    assert write(browser, 50, follow=False)["passes"] == 0

    write(browser, 1000, follow=False)  # warm-up: the first runs of a page are slower
    rates = {True: [], False: []}
    for _ in range(3):  # interleaved, so a busy spell of the machine hits both
        for follow in (False, True):
            rates[follow].append(write(browser, 3000, follow)["rate"])
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    print(f"greedy tok/s in headless Chromium, tiny model: explorer off {off:.0f}, following {on:.0f} "
          f"({on / off:.2f}x; runs {rates})")
    assert on >= 0.5 * off, rates


@pytest.mark.slow
def test_screenshot_of_the_explorer(browser, shakespeare_slice, tmp_path):
    """Writes web/explorer.png (README, docs' web and inspect pages): a small model (4 layers x 4 heads, 64 wide)
    trained briefly on real text, writing with the explorer following, then one character pinned."""
    from gpt.train.loop import main

    main(["--data", str(shakespeare_slice), "--out-dir", str(tmp_path / "ckpt"), "--n_layer", "4", "--n_head", "4",
          "--n_embd", "64", "--block_size", "64", "--dropout", "0", "--batch_size", "32", "--max_iters", "600",
          "--eval_interval", "300", "--eval_iters", "5", "--no-compile", "--no-progress", "--dtype", "float32"])
    site = build_site(tmp_path / "ckpt", tmp_path)
    with serving(site) as address:
        browser.set_window_size(1100, 1650)
        browser.get(address)
        assert wait_for(browser, ("ready", "error")) == "ready"
        js(browser, "for (const [k, v] of Object.entries(arguments[0])) document.getElementById(k).value = v;",
           {"prompt": "ROMEO:\n", "length": "160", "temperature": "0.8", "seed": "3"})
        browser.find_element("id", "generate").click()
        assert wait_for(browser, ("done", "error")) == "done"
        browser.find_element("css selector", '#x-text .ch[data-pos="60"]').click()
        choose(browser, 1, 2)
        browser.save_screenshot(str(ROOT / "web" / "explorer.png"))
        browser.set_window_size(1000, 900)


def test_a_site_without_an_explain_graph_writes_without_the_explorer(site, exported_std, tmp_path):
    out = tmp_path / "site"
    shutil.copytree(site, out)  # a site written before, with its explain.onnx
    r = run_module("export.web", "--onnx", str(exported_std), "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr
    assert not (out / "explain.onnx").exists()
    assert f"no explorer: {exported_std.with_name('std.explain.onnx')} is missing" in r.stdout


def test_an_explain_graph_of_another_model_is_refused_in_one_line(site, tiny_ckpt, tmp_path):
    model = load_checkpoint(tiny_ckpt)[0]
    torch.manual_seed(0)
    other = GPT(model.config)  # the same shape and vocabulary, other weights
    out = tmp_path / "site"
    shutil.copytree(site, out)
    (out / "explain.onnx").write_bytes(export_explain_proto(other).SerializeToString())
    with pytest.raises(GPTError, match="explain.onnx is not this model: its logits differ") as e:
        check_on_wasm(out, Path("model.onnx"))
    assert "\n" not in str(e.value)
