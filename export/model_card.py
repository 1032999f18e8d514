"""The model card (README.md) of an exported Hugging Face directory: what the model is, its val loss, how it was
trained (from the checkpoint's manifest and, where present, the run's train_state.pt) and how to load it."""

from __future__ import annotations

import json
from pathlib import Path

from gpt.config import ModelConfig
from gpt.data import SHA256 as TINY_SHAKESPEARE_SHA256

SETTINGS = ("optimizer", "learning_rate", "muon_lr", "batch_size", "max_iters", "warmup_iters", "weight_decay",
            "grad_clip", "dataset", "dtype", "compile")


def run_settings(ckpt_dir: Path) -> dict:
    """The training run's settings saved in train_state.pt (weights_only load), or {} when there is none."""
    path = ckpt_dir / "train_state.pt"
    if not path.is_file():
        return {}
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        settings = json.loads(state["train_config"]) | {"dtype": state.get("dtype")}
    except Exception:  # a damaged state file only leaves the card without these lines; the weights are vouched for
        return {}
    if state.get("data_sha256") == TINY_SHAKESPEARE_SHA256:
        settings["dataset"] = "Tiny Shakespeare (1,115,394 characters, 90/10 split)"
    return settings


def training_lines(manifest: dict, settings: dict) -> list[str]:
    source = manifest.get("converted_from")
    if source:
        settings = source.get("train_config", {})
        lines = [f"- Trained with {source['format']} and converted with `python -m gpt.convert` "
                 f"(its vocabulary of {source['vocab_size']} ids, cut to the characters of its meta.pkl)."]
    else:
        lines = ["- Trained with `python -m gpt.train` of shakespeare-gpt (PyTorch)."]
    if "val_loss" in manifest:
        kind = {"full pass": "a full pass over the validation split"}.get(manifest.get("val_loss_kind", ""),
                                                                           "an estimate on random validation batches")
        lines.append(f"- Validation loss **{manifest['val_loss']:.4f}** nats per character ({kind}), "
                     f"at iteration {manifest.get('iter', '?')}.")
    shown = [f"{k} {settings[k]}" for k in SETTINGS if settings.get(k) is not None]
    if shown:
        lines.append("- Settings: " + ", ".join(shown) + ".")
    return lines


def model_card(name: str, c: ModelConfig, n_params: int, manifest: dict, settings: dict) -> str:
    vocab = "".join(manifest["vocab"])
    return "\n".join([
        "---",
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags: [gpt2, character-level, shakespeare-gpt]",
        "---",
        f"# {name}",
        "",
        f"A character-level GPT ({n_params / 1e6:.2f} M parameters: {c.n_layer} layers x {c.n_head} heads x "
        f"{c.n_embd}, context {c.block_size} characters, bias {c.bias}), stored as transformers' "
        "`GPT2LMHeadModel`: pre-LayerNorm blocks, learned positions, exact GELU (`activation_function: gelu`), "
        "the head tied to the token embedding. One token per character; its vocabulary of "
        f"{c.vocab_size} characters is {json.dumps(vocab, ensure_ascii=False)}. No special tokens: generation "
        "stops at `max_new_tokens`, and a prompt plus generated text must fit in the context.",
        "",
        "## Training",
        "",
        *training_lines(manifest, settings),
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        f'model = AutoModelForCausalLM.from_pretrained("{name}")',
        'inputs = tokenizer("ROMEO:", return_tensors="pt")',
        f"out = model.generate(**inputs, max_new_tokens={max(1, c.block_size - 6)}, do_sample=False)",
        "print(tokenizer.decode(out[0]))",
        "```",
        "",
        "Greedy text equals `python -m gpt.sample --temperature 0` of the checkpoint it was exported from, within "
        "the context; ONNX Runtime through optimum: "
        f'`ORTModelForCausalLM.from_pretrained("{name}", export=True)`.',
        "",
    ])
