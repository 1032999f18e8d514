import hashlib

import numpy as np
import pytest
from conftest import run_module
from hypothesis import given
from hypothesis import strategies as st

from gpt.data import SHA256, BatchSampler, load_shakespeare, prepare, split
from gpt.errors import GPTError
from gpt.tokenizer import CharTokenizer, UnknownCharacterError

VOCAB = CharTokenizer.from_text("\n !',-.:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz&$3")


def test_vocabulary_is_sorted_set_of_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.itos == sorted(set("hello world"))
    assert tok.decode(tok.encode("low")) == "low"


@given(st.text(alphabet=VOCAB.itos))
def test_round_trip_over_the_vocabulary(text):
    assert VOCAB.decode(VOCAB.encode(text)) == text


def test_unknown_characters_are_named():
    with pytest.raises(UnknownCharacterError, match=r"'#'.*'é'|'é'.*'#'"):
        VOCAB.encode("ROMEO#é")


def test_json_round_trip():
    assert CharTokenizer(VOCAB.to_json()).itos == VOCAB.itos


def test_prepare_copies_and_verifies(tmp_path):
    src = tmp_path / "src.txt"
    src.write_text("not shakespeare")
    with pytest.raises(GPTError, match="checksum mismatch"):
        prepare(str(src), tmp_path / "data")
    assert not (tmp_path / "data/tinyshakespeare/input.txt").exists()  # nothing half-written is left


def test_load_shakespeare_explains_what_to_run(tmp_path):
    with pytest.raises(GPTError, match="python -m gpt.data"):
        load_shakespeare(tmp_path)
    bad = tmp_path / "tinyshakespeare/input.txt"
    bad.parent.mkdir(parents=True)
    bad.write_text("tampered")
    with pytest.raises(GPTError, match="wrong checksum"):
        load_shakespeare(tmp_path)


def test_real_dataset_checksum_and_split():
    text = load_shakespeare()  # `make test` prepares data/ first
    assert hashlib.sha256(text.encode()).hexdigest() == SHA256
    assert len(text) == 1_115_394 and CharTokenizer.from_text(text).vocab_size == 65
    train, val = split(np.arange(len(text)))
    assert len(train) == 1_003_854 and val[0] == train[-1] + 1


def test_batches_are_shifted_windows():
    data = np.arange(1000)
    x, y = BatchSampler(data, block_size=8, batch_size=4, seed=0).next()
    assert x.shape == y.shape == (4, 8)
    np.testing.assert_array_equal(y, x + 1)


def test_batch_sampler_state_resumes_the_sequence():
    a = BatchSampler(np.arange(1000), 8, 4, seed=1)
    a.next()
    state = a.state()
    expected = a.next()
    b = BatchSampler(np.arange(1000), 8, 4, seed=99)
    b.set_state(state)
    np.testing.assert_array_equal(b.next()[0], expected[0])


def test_data_cli_wrong_checksum_is_one_line(tmp_path):
    src = tmp_path / "x.txt"
    src.write_text("hello")
    r = run_module("gpt.data", "--source", str(src), "--data-dir", str(tmp_path / "d"))
    assert r.returncode != 0
    assert r.stderr.strip().startswith("error: checksum mismatch") and len(r.stderr.strip().splitlines()) == 1


def test_eval_windows_cover_every_prediction_once():
    from gpt.data import eval_windows

    data = np.arange(23)
    batches = list(eval_windows(data, block_size=5, batch_size=2))
    xs = np.concatenate([x.ravel() for x, _ in batches])
    ys = np.concatenate([y.ravel() for _, y in batches])
    np.testing.assert_array_equal(xs, np.arange(22))
    np.testing.assert_array_equal(ys, np.arange(1, 23))
