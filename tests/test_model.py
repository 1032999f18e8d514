import math

import pytest
import torch

from gpt.config import ModelConfig, get_preset
from gpt.errors import GPTError
from gpt.model import GPT
from gpt.model.checkpoint import load_checkpoint, save_checkpoint
from gpt.tokenizer import CharTokenizer

CFG = ModelConfig(vocab_size=65, block_size=48, n_layer=2, n_head=4, n_embd=64, dropout=0.0)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CFG).eval()


def test_presets_match_the_design():
    large, shakespeare = get_preset("large").model, get_preset("shakespeare").model
    assert (large.n_layer, large.n_head, large.n_embd, large.block_size) == (12, 12, 768, 256)
    assert (shakespeare.n_layer, shakespeare.n_head, shakespeare.n_embd, shakespeare.block_size) == (6, 6, 384, 256)
    with pytest.raises(GPTError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(GPTError, match="divisible"):
        ModelConfig(n_embd=100, n_head=3)


def test_head_is_tied_and_init_follows_gpt2(model):
    assert model.lm_head.weight is model.wte.weight
    proj = model.h[0].attn.c_proj.weight
    assert abs(proj.std().item() - 0.02 / math.sqrt(2 * CFG.n_layer)) < 0.003
    assert abs(model.h[0].mlp.c_fc.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize("backend", ["naive", "sdpa"])
def test_kv_cache_equals_full_recompute(model, backend):
    model.set_attention(backend)
    idx = torch.randint(0, CFG.vocab_size, (2, CFG.block_size))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_cache(2)
        parts = [model(idx[:, :10], cache=cache)[0]]
        parts += [model(idx[:, t:t + 1], cache=cache)[0] for t in range(10, 30)]  # 20 single-token steps
        parts.append(model(idx[:, 30:], cache=cache)[0])  # and a multi-token append
    model.set_attention("sdpa")
    assert (torch.cat(parts, dim=1) - full).abs().max().item() <= 1e-5


def test_attention_backends_compute_the_same_function(model):
    idx = torch.randint(0, CFG.vocab_size, (3, 40))
    with torch.no_grad():
        model.set_attention("naive")
        naive, _ = model(idx)
        model.set_attention("sdpa")
        sdpa, _ = model(idx)
    assert (naive - sdpa).abs().max().item() <= 1e-5


def test_outputs_are_causal(model):
    a = torch.randint(0, CFG.vocab_size, (1, 20))
    b = a.clone()
    b[0, 12] = (b[0, 12] + 1) % CFG.vocab_size
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    assert torch.equal(la[:, :12], lb[:, :12]) and not torch.allclose(la[:, 12:], lb[:, 12:])


def test_too_long_input_is_refused(model):
    with pytest.raises(GPTError, match="block_size"):
        model(torch.zeros(1, CFG.block_size + 1, dtype=torch.long))


def test_save_load_gives_identical_logits(model, tmp_path):
    tok = CharTokenizer([chr(32 + i) for i in range(65)])
    save_checkpoint(tmp_path, model, tok, iter=3, val_loss=1.5)
    loaded, tok2, info = load_checkpoint(tmp_path)
    idx = torch.randint(0, CFG.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], loaded(idx)[0])
    assert tok2.itos == tok.itos and info["iter"] == 3 and loaded.lm_head.weight is loaded.wte.weight


def test_weight_decay_only_on_matrices(model):
    decay, no_decay = model.optimizer_groups(0.1)
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_compiled_decode_step_compiles_once_and_matches_eager(model):
    """The static cache makes every one-token step the same graph: after the first, no step may recompile,
    through the generation loop's re-prefill past block_size too, and the logits equal the eager decoder's."""
    import numpy as np
    import torch._dynamo

    from gpt.decode.backends.torch_decoder import TorchDecoder
    from gpt.decode.loop import generate
    from gpt.decode.sampler import Sampler, SamplingParams

    vocab = [chr(33 + i) for i in range(CFG.vocab_size)]
    torch._dynamo.reset()
    eager, compiled = TorchDecoder(model, vocab), TorchDecoder(model, vocab, compile=True)
    ids = np.arange(6)[None] % CFG.vocab_size
    compiled.prefill(ids)
    compiled.step(ids[:, :1])  # the one compile
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled.prefill(ids)
        np.testing.assert_allclose(compiled.step(ids[:, :1]), (eager.prefill(ids), eager.step(ids[:, :1]))[1],
                                   atol=1e-5, rtol=0)
        prompt, n, greedy = list(range(6)), 2 * CFG.block_size, SamplingParams(temperature=0)  # two re-prefills
        np.testing.assert_array_equal(generate(compiled, prompt, n, Sampler(greedy)),
                                      generate(eager, prompt, n, Sampler(greedy)))


def test_every_decode_step_matches_recompute_across_re_prefills():
    """Per-step logits, recorded through the Decoder interface, of the cached and the no-cache torch decoders
    on random weights (every character of the window matters) through two re-prefills past block_size."""
    import numpy as np

    from gpt.decode.backends.torch_decoder import TorchDecoder
    from gpt.decode.loop import forced_logits

    torch.manual_seed(1)
    fresh = GPT(CFG).eval()
    vocab = [chr(33 + i) for i in range(CFG.vocab_size)]
    tokens = np.random.default_rng(0).integers(0, CFG.vocab_size, 2 * CFG.block_size).tolist()  # two re-prefills
    cached = forced_logits(TorchDecoder(fresh, vocab), list(range(10)), tokens)
    recomputed = forced_logits(TorchDecoder(fresh, vocab, use_cache=False), list(range(10)), tokens)
    assert len(cached) == len(recomputed) == len(tokens)
    for a, b in zip(cached, recomputed, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
