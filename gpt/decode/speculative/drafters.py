"""Choosing a drafter for speculative decoding from what the user typed (`--speculative distilled|ngram|FILE`): the one
place that checks the model can speculate and opens the drafter. Torch-free."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from gpt.data import DEFAULT_DATA_DIR, RELATIVE_PATH, load_text, split
from gpt.decode.speculative.loop import Drafter, Verifier, check_draft_tokens
from gpt.decode.speculative.training_text import encode_text
from gpt.errors import GPTError

SPECULATIVE_HELP = ("draft characters and verify them in one run of the model (gqa layout only): `distilled` (the "
                    "model's own mean next-character distribution after each short context, distilled from it once "
                    "over the training text; best when sampling), `ngram` (the training text and the text so far, "
                    "no model run) or FILE, a smaller gqa export with the same vocabulary and block size (e.g. "
                    "out-cpu/model.onnx)")
SPECULATIVE_METAVAR = "distilled|ngram|FILE"


def check_speculative(decoder, draft_tokens: int) -> Verifier:
    """`decoder` can verify drafts (a gqa onnxruntime decoder), and `draft_tokens` fits its block size."""
    meta = getattr(decoder, "meta", None)
    if meta is not None and meta.layout != "gqa":
        raise GPTError(f"speculative needs the gqa layout; {decoder.path} has the {meta.layout} layout: export "
                       "one with `python -m export.onnx --ckpt CKPT` (gqa is the default)")
    if meta is None or not hasattr(decoder, "run"):
        raise GPTError("speculative needs the onnxruntime backend (torch and onnxruntime-genai decode one "
                       "token per run here)")
    check_draft_tokens(draft_tokens, decoder.block_size)
    return decoder


def open_drafter(spec: str, model: Verifier, threads: int | None = None, ngram_text: Path | None = None,
                 data_dir: Path = DEFAULT_DATA_DIR, say=print) -> Drafter:
    """`distilled`, `ngram` or the path of a draft model's .onnx file."""
    meta = model.meta
    if spec == "distilled":
        from gpt.decode.speculative.distilled import DistilledDrafter, open_table

        def training_ids() -> tuple[np.ndarray, str | None]:
            text, text_sha256 = train_split(ngram_text, data_dir, model.path, None, meta.data_sha256)
            return encode_text(text, meta.vocab), text_sha256

        return DistilledDrafter(open_table(model, training_ids, say=say))
    if spec == "ngram":
        from gpt.decode.speculative.ngram import INDEX_FILE, NgramDrafter, open_index

        return NgramDrafter(open_index(Path(model.path), meta.vocab, meta.data_sha256,
                                       *train_split(ngram_text, data_dir, model.path, INDEX_FILE, meta.data_sha256),
                                       say=say))
    path = Path(spec)
    if path.suffix != ".onnx" or not path.exists():
        raise GPTError(f"speculative takes `distilled`, `ngram` or a draft model's .onnx file; {spec} is none of them"
                       + (" (no such file)" if path.suffix == ".onnx" else ""))
    from gpt.decode.backends.ort_decoder import open_onnx
    from gpt.decode.speculative.draft_model import ModelDrafter

    draft = open_onnx(path, threads=threads)
    if draft.meta.layout != "gqa":
        raise GPTError(f"draft model {path} has the {draft.meta.layout} layout; export it with the gqa layout")
    return ModelDrafter(draft, meta.vocab, meta.block_size)


def train_split(ngram_text: Path | None, data_dir: Path, model_path: Path, saved: str | None,
                data_sha256: str | None) -> tuple[str | None, str | None]:
    """(the training split, the sha256 of its whole text) to build a drafter's file from; (None, None) if that
    file (`saved`, when given) already exists beside the model. A text other than the one the model was trained on
    (its `data_sha256`, when the export recorded one) is refused."""
    if saved is not None and (Path(model_path).parent / saved).is_file():
        return None, None
    path = Path(ngram_text) if ngram_text else Path(data_dir) / RELATIVE_PATH
    if not path.is_file():
        raise GPTError(f"the drafter is made from the training text once; {path} does not exist: "
                       "run `python -m gpt.data` or pass --ngram-text FILE")
    text = load_text(path)
    text_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if data_sha256 and text_sha256 != data_sha256:
        raise GPTError(f"the training text given (sha256 {text_sha256[:12]}...) is not the one the model was trained "
                       f"on ({data_sha256[:12]}...): pass that one with --ngram-text")
    return split(text)[0], text_sha256
