"""Export a checkpoint as a Hugging Face model directory that transformers loads with no code of ours.

    python -m export.hf --ckpt out --out hf/ [--name shakespeare-gpt]

Writes into --out (new or empty): `model.safetensors` + `config.json` (transformers' GPT2LMHeadModel, see
export/hf_model.py), `tokenizer.json` + `tokenizer_config.json` (a character-level fast tokenizer with our ids,
export/hf_tokenizer.py) and `README.md` (the model card). Then:

    AutoModelForCausalLM.from_pretrained("hf/"); AutoTokenizer.from_pretrained("hf/")
    ORTModelForCausalLM.from_pretrained("hf/", export=True)        # optimum-onnx

The directory is what `push_to_hub` would upload (pushing is left to `huggingface-cli upload`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from gpt.errors import ArgumentParser, GPTError, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m export.hf", description=__doc__)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="checkpoint directory (default: out)")
    p.add_argument("--out", type=Path, required=True, help="directory to write (new or empty), e.g. hf")
    p.add_argument("--name", help="model name in the card (default: the --out directory's name)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from safetensors.torch import save as save_safetensors

    from export.hf_model import gpt2_config, gpt2_state_dict
    from export.model_card import model_card, run_settings
    from gpt.fsutil import atomic_write_bytes, atomic_write_text, check_new_dir, ensure_dir
    from gpt.model.checkpoint import load_checkpoint

    check_new_dir(args.out)
    try:
        from export.hf_tokenizer import char_tokenizer, tokenizer_config
    except ImportError as e:
        raise GPTError(f"export.hf needs the `tokenizers` package ({e}); install the extra: "
                       "pip install -e '.[hf]'") from None
    model, tokenizer, manifest = load_checkpoint(args.ckpt)
    c = model.config
    name = args.name or args.out.resolve().name
    out = ensure_dir(args.out, flag="--out")
    atomic_write_bytes(out / "model.safetensors", save_safetensors(gpt2_state_dict(model), {"format": "pt"}))
    atomic_write_text(out / "config.json", json.dumps(gpt2_config(c), indent=2) + "\n")
    atomic_write_text(out / "tokenizer.json", char_tokenizer(tokenizer.itos).to_str(pretty=True))
    atomic_write_text(out / "tokenizer_config.json", json.dumps(tokenizer_config(c.block_size), indent=2) + "\n")
    card = model_card(name, c, model.num_params(), manifest, run_settings(args.ckpt))
    atomic_write_text(out / "README.md", card)
    print(f"wrote {out}/: model.safetensors (GPT2LMHeadModel), config.json, tokenizer.json, tokenizer_config.json, "
          f"README.md; load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    run_cli(main)
