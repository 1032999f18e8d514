"""The Python API behind `gpt.load`: text in, text out, one prompt at a time (`generate`) or many at once through
the continuous-batching engine (`engine`). Torch-free; the backend's imports come with its decoder."""

from __future__ import annotations

from gpt.decode.loop import Decoder, generate, prepare_prompt
from gpt.decode.sampler import Sampler, SamplingParams
from gpt.decode.speculative.loop import DEFAULT_DRAFT_TOKENS, Drafter, SpeculativeStats, generate_speculative
from gpt.errors import GPTError
from gpt.tokenizer import CharTokenizer


class TextGenerator:
    """The Python API: text in, text out, with the same options as `python -m gpt.sample`."""

    def __init__(self, decoder: Decoder, drafter: Drafter | None = None, draft_tokens: int = DEFAULT_DRAFT_TOKENS):
        self.decoder, self.drafter, self.draft_tokens = decoder, drafter, draft_tokens
        self.tokenizer = CharTokenizer(decoder.vocab)
        self.stats = SpeculativeStats()  # what the drafts earned, over every speculative generate() so far

    def engine(self, slots: int = 16, threads: int | None = None, **options):
        """A continuous-batching engine on the same gqa file (`gpt.engine.Engine`): many prompts in, texts or
        token streams out. Use it as a context manager, or call `close()`."""
        meta = getattr(self.decoder, "meta", None)
        if meta is None or meta.layout != "gqa":
            raise GPTError("the engine runs a gqa ONNX file: gpt.load('out/model.onnx') after "
                           "`python -m export.onnx --ckpt out`")
        from gpt.engine import Engine

        return Engine(self.decoder.path, slots=slots, threads=threads, **options)

    def generate(self, prompt: str = "\n", max_new_tokens: int = 500, temperature: float = 0.8, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 1337, num_samples: int = 1) -> list[str]:
        """`num_samples` continuations (each prefixed by the prompt), decoded as one batch."""
        params = SamplingParams(temperature, top_k, top_p, seed)
        prompt_ids = prepare_prompt(self.tokenizer, prompt, self.decoder.block_size)
        if self.drafter is not None:
            if num_samples != 1:
                raise GPTError("speculative decoding decodes one sample at a time: call generate once per seed")
            out = [generate_speculative(self.decoder, prompt_ids, max_new_tokens, params, self.drafter,
                                        self.draft_tokens, stats=self.stats)]
        else:
            out = generate(self.decoder, prompt_ids, max_new_tokens, Sampler(params), num_samples).tolist()
        return [prompt + self.tokenizer.decode(row) for row in out]
