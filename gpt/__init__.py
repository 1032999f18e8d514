"""A character-level GPT: train with torch, serve with onnxruntime.

Importing `gpt` does not import torch, so the base install (numpy + onnxruntime) can sample:

    import gpt
    model = gpt.load("out/model.onnx")             # or gpt.load("out") for the torch checkpoint
    print(model.generate("ROMEO:", max_new_tokens=200, temperature=0.8)[0])

    fast = gpt.load("out/model.onnx", speculative="ngram")   # the same text, several characters per model run
"""

from __future__ import annotations

from pathlib import Path

from gpt.api import TextGenerator


def load(path: str | Path, backend: str | None = None, speculative: str | None = None, draft_tokens: int = 4,
         ngram_text: str | Path | None = None, **options) -> TextGenerator:
    """Load a checkpoint directory (torch backend) or an `.onnx` file (onnxruntime backend).

    `backend` defaults from the path; `options` are those of `gpt.decode.backends.open_decoder`
    (threads, device, use_cache, compile). `speculative` (`distilled`, `ngram` or a draft model's .onnx file; a
    gqa file only) drafts up to `draft_tokens` characters per run of the model: the same text, faster
    (`gpt.decode.speculative.loop`); `ngram_text` is the training text the drafter's table or index is made from
    the first time.
    """
    from gpt.decode.backends import open_decoder

    path = Path(path)
    backend = backend or ("onnxruntime" if path.suffix == ".onnx" else "torch")
    decoder = open_decoder(backend, path, **options)
    if speculative is None:
        return TextGenerator(decoder)
    from gpt.decode.speculative.drafters import check_speculative, open_drafter

    model = check_speculative(decoder, draft_tokens)
    return TextGenerator(model, open_drafter(speculative, model, options.get("threads"), ngram_text), draft_tokens)


__all__ = ["TextGenerator", "load"]
