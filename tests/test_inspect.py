"""gpt.inspect: the captured internals are the model's own numbers, and the report shows them.

The CLI's bad inputs are rows of tests/test_bad_input.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from gpt.errors import GPTError
from gpt.inspect import analysis
from gpt.inspect.__main__ import main
from gpt.inspect.capture import layer_norm_names, trace
from gpt.inspect.report import FIGURES, JSON_NAME
from gpt.model.checkpoint import load_checkpoint

PROMPT = "the quick brown fox jumps"


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    model, tokenizer, _ = load_checkpoint(tiny_ckpt)
    return model, tokenizer


@pytest.fixture(scope="module")
def traced(loaded):
    model, tokenizer = loaded
    return trace(model, tokenizer.encode(PROMPT))


def test_attention_is_causal_and_each_row_sums_to_one(loaded, traced):
    model, _ = loaded
    T = len(PROMPT)
    att = traced.attention
    assert att.shape == (model.config.n_layer, model.config.n_head, T, T)
    assert torch.count_nonzero(att.triu(1)) == 0
    torch.testing.assert_close(att.sum(dim=-1), torch.ones(att.shape[:-1]))
    assert att[..., 0, 0].eq(1).all()  # the first character can only look at itself


def test_weights_times_values_reproduce_each_layers_attention_output(loaded, traced):
    """The weights, recomputed with the naive softmax, give what the model's own (sdpa) attention gave."""
    model, _ = loaded
    T, C = len(PROMPT), model.config.n_embd
    with torch.no_grad():
        for layer, block in enumerate(model.h):
            mixed = (traced.attention[layer] @ traced.values[layer]).transpose(0, 1).reshape(T, C)
            torch.testing.assert_close(block.attn.c_proj(mixed), traced.attn_outputs[layer], atol=1e-5, rtol=1e-4)
        uniform = torch.ones(T, T).tril() / torch.arange(1, T + 1).unsqueeze(1)  # what a wrong capture might give
        mixed = (uniform @ traced.values[0]).transpose(0, 1).reshape(T, C)
        assert not torch.allclose(model.h[0].attn.c_proj(mixed), traced.attn_outputs[0], atol=1e-3)


def test_recording_changes_nothing_and_leaves_no_hooks(loaded, traced):
    model, tokenizer = loaded
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokenizer.encode(PROMPT)]))
    torch.testing.assert_close(traced.logits, logits[0], atol=0, rtol=0)
    with pytest.raises(GPTError, match="exceeds block_size"):
        trace(model, [0] * (model.config.block_size + 1))
    assert not any(m._forward_hooks for m in model.modules())


def test_the_stream_is_captured_where_each_layer_norm_reads_it(loaded, traced):
    model, tokenizer = loaded
    ids = torch.tensor(tokenizer.encode(PROMPT))
    with torch.no_grad():
        embedded = model.wte(ids) + model.wpe(torch.arange(len(ids)))
        torch.testing.assert_close(traced.embeddings, embedded)
        torch.testing.assert_close(traced.ln_outputs[0], model.h[0].ln_1(embedded))
    torch.testing.assert_close(traced.ln_inputs[1], embedded + traced.attn_outputs[0])  # ln_2 reads x + attn
    torch.testing.assert_close(traced.ln_inputs[2], traced.block_outputs[0])  # the next block's ln_1
    torch.testing.assert_close(traced.ln_inputs[-1], traced.block_outputs[-1])  # ln_f
    assert layer_norm_names(2) == ["0.ln_1", "0.ln_2", "1.ln_1", "1.ln_2", "ln_f"]
    before, after = analysis.stream_norms(traced)
    assert before.shape == after.shape == (5, len(PROMPT))
    torch.testing.assert_close(before[0], embedded.norm(dim=-1))


def test_logit_lens_last_depth_is_the_models_prediction(loaded, traced):
    model, tokenizer = loaded
    lens = analysis.logit_lens(model, traced)
    assert lens.shape == (model.config.n_layer + 1, len(PROMPT), model.config.vocab_size)
    torch.testing.assert_close(lens[-1], torch.softmax(traced.logits, dim=-1))
    ids = tokenizer.encode(PROMPT)
    true_next = analysis.true_next_probability(lens, ids)
    assert true_next.shape == (model.config.n_layer + 1, len(PROMPT) - 1)
    assert true_next[1, 4] == lens[1, 4, ids[5]]
    assert true_next[-1, 5:].mean() > 0.9  # overfit on this very text: sure of it by the last block
    top = analysis.top_next(lens[-1], tokenizer.itos, 3)
    assert top[2][0][0] == " " and top[2][0][1] > top[2][1][1] >= top[2][2][1]  # after "the": a space


def test_pca_projects_on_the_top_eigenvectors_of_the_covariance():
    generator = torch.Generator().manual_seed(0)
    u, v = torch.eye(16)[3], torch.eye(16)[7]
    a, b = torch.randn(40, 1, generator=generator) * 5, torch.randn(40, 1, generator=generator) * 2
    table = a * u + b * v + 0.01 * torch.randn(40, 16, generator=generator)  # two planted directions
    projection = analysis.pca_2d(table)
    centred = table - table.mean(dim=0)
    eigenvalues, eigenvectors = torch.linalg.eigh(centred.T @ centred)  # ascending
    expected = centred @ eigenvectors[:, [-1, -2]]
    torch.testing.assert_close(projection.points.abs(), expected.abs(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(projection.explained), eigenvalues[[-1, -2]] / eigenvalues.sum())
    assert eigenvectors[3, -1].abs() > 0.99 and eigenvectors[7, -2].abs() > 0.99 and sum(projection.explained) > 0.99


def test_char_classes_and_labels():
    classes = {c: analysis.char_class(c) for c in "aeQ3,\n x!"}
    assert classes == {"a": "lower-case vowel", "e": "lower-case vowel", "Q": "upper case", "3": "digit",
                       ",": "punctuation", "\n": "whitespace", " ": "whitespace", "x": "consonant",
                       "!": "punctuation"}
    assert [analysis.shown(c) for c in " \na"] == ["␣", "↵", "a"]


def test_attended_most_averages_the_heads():
    att = torch.zeros(1, 2, 3, 3)
    att[0, :, 0, 0] = 1
    att[0, 0, 1] = torch.tensor([0.9, 0.1, 0])  # head 0 looks back, head 1 at itself: the mean looks back
    att[0, 1, 1] = torch.tensor([0.2, 0.8, 0])
    att[0, :, 2] = torch.tensor([0.1, 0.7, 0.2])
    assert analysis.attended_most(att).tolist() == [[0, 0, 1]]


def test_head_habits_score_each_heads_targets():
    chars = list("xy\nabcd")

    def looking_at(keys: list[int]) -> torch.Tensor:
        return torch.eye(len(chars))[keys]  # row q puts all its weight on keys[q]

    heads = torch.stack([looking_at([0, 0, 1, 2, 3, 4, 5]),  # the previous character
                         looking_at([0, 0, 0, 0, 0, 2, 2]),  # the newline, once it is > 2 characters back
                         looking_at([0, 0, 0, 3, 3, 3, 3])])  # the start of the word "abcd"
    habits = analysis.head_habits(heads[None], chars)[0]
    # habits: itself (7 queries), previous (6), two back (5), word start (query 6 -> 3), last newline (5, 6 -> 2)
    expected = torch.tensor([[1 / 7, 1, 0, 0, 0], [1 / 7, 1 / 6, 1 / 5, 0, 1], [2 / 7, 1 / 3, 2 / 5, 1, 0]])
    torch.testing.assert_close(habits, expected)
    short = analysis.head_habits(heads[None, :, :3, :3], chars[:3])[0]
    assert short[:, 3:].isnan().all() and not short[:, :3].isnan().any()  # no word start, no newline far enough


def test_each_habit_is_named_from_the_layer_it_lives_in():
    habits = torch.zeros(2, 2, len(analysis.HABITS))
    habits[0, 1, 1] = 0.8  # the previous character: layer 0 head 1
    habits[1, 0, 1] = 0.3
    habits[1, 0, 4] = 0.6  # the last newline: layer 1 head 0
    habits[:, :, 3] = float("nan")  # no word start in this prompt
    found = {h.name: (h.layer, h.head, h.weight) for h in analysis.strongest_heads(habits)}
    assert found["previous character"] == (0, 1, pytest.approx(0.8))
    assert found["last newline"] == (1, 0, pytest.approx(0.6)) and "start of the word" not in found
    sentence = analysis.habit_sentence(analysis.strongest_heads(habits))
    assert "layer 0 head 1 puts 0.80 of its weight on the previous character" in sentence


def test_cli_writes_the_figures_the_page_and_the_numbers(tiny_ckpt, traced, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["--ckpt", str(tiny_ckpt), "--prompt", PROMPT, "--out", str(out), "--layers", "1",
                 "--heads", "0", "--compare-init", "--json"]) == 0
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == set(FIGURES.values())
    for name in pngs:
        blob = (out / name).read_bytes()
        assert blob.startswith(b"\x89PNG") and len(blob) > 5000, name
    page = (out / "index.html").read_text(encoding="utf-8")
    assert all(page.count(f'src="{name}"') == 1 for name in pngs)
    assert "the quick brown fox" in page and "<script" not in page
    numbers = json.loads((out / JSON_NAME).read_text(encoding="utf-8"))
    attention = torch.tensor(numbers["attention"]["weights"])
    assert attention.shape == (1, 1, len(PROMPT), len(PROMPT))
    torch.testing.assert_close(attention[0, 0], traced.attention[1, 0], atol=1e-5, rtol=0)
    assert [m["title"].split()[0] for m in numbers["embedding"]["maps"]] == ["untrained", "trained"]
    habits = numbers["attention"]["head_habits"]  # every layer and head, whatever --layers and --heads drew
    assert len(habits) == 2 and len(habits[0]) == 2 and habits[0][0][3] is not None  # words start in the prompt
    assert numbers["logit_lens"]["depths"] == ["embedding", "block 0", "block 1"]
    assert "".join(top[0][0] for top in numbers["final_top_k"][4:8]) == "uick"  # its best guesses after "the q"
    assert str(out / "index.html") in capsys.readouterr().out
