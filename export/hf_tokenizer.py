"""Our character vocabulary as a Hugging Face fast tokenizer (`tokenizers`): one token per character, our ids.

A `WordLevel` model over the characters, a pre-tokenizer that isolates every character (newlines included) and
a `Fuse` decoder that joins them back without spaces; no normalizer, no special tokens. A character outside the
vocabulary is an error (its `[UNK]` is missing), as it is for `gpt.sample`.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers


def char_tokenizer(itos: list[str]) -> Tokenizer:
    tok = Tokenizer(models.WordLevel({c: i for i, c in enumerate(itos)}))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def tokenizer_config(block_size: int) -> dict:
    """tokenizer_config.json: AutoTokenizer loads tokenizer.json as-is, decodes without tidying spaces, and gives
    no `token_type_ids` (GPT-2 would add their embeddings, rows of wte, to every position)."""
    return {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
            "model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False}
