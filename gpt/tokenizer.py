"""Character-level tokenizer: the vocabulary is the sorted set of characters of the training text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gpt.errors import GPTError


class UnknownCharacterError(GPTError, ValueError):
    """The text holds characters that are not in the vocabulary."""


class CharTokenizer:
    def __init__(self, itos: Sequence[str]):
        if len(set(itos)) != len(itos) or any(len(c) != 1 for c in itos):
            raise GPTError("vocabulary must be a list of distinct single characters")
        self.itos = list(itos)
        self.stoi = {c: i for i, c in enumerate(self.itos)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.stoi})
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UnknownCharacterError(
                f"{len(unknown)} character(s) not in the model's vocabulary: {shown}"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.itos[i] for i in ids)

    def to_json(self) -> list[str]:
        return list(self.itos)
