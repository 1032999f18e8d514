"""The numbers the figures show, computed from a `Trace` (and the model's own weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gpt.inspect.capture import Trace
from gpt.model import GPT

CHAR_CLASSES = ("lower-case vowel", "consonant", "upper case", "digit", "punctuation", "whitespace")


def char_class(c: str) -> str:
    if c.isspace():
        return "whitespace"
    if c.isdigit():
        return "digit"
    if c.isupper():
        return "upper case"
    if c in "aeiou":
        return "lower-case vowel"
    if c.islower():
        return "consonant"
    return "punctuation"


def shown(c: str) -> str:
    """A character as a visible label: space and newline would otherwise be blank."""
    return {" ": "␣", "\n": "↵", "\t": "⇥"}.get(c, c)


@torch.no_grad()
def logit_lens(model: GPT, trace: Trace) -> torch.Tensor:
    """Next-character probabilities [L+1, T, V] read off the residual stream after the embedding (depth 0)
    and after each block (depth l), through the model's final LayerNorm and head."""
    weight = next(model.parameters())
    streams = torch.cat([trace.embeddings[None], trace.block_outputs]).to(weight.device, weight.dtype)
    return torch.softmax(model.lm_head(model.ln_f(streams)).float(), dim=-1).cpu()


def depth_names(n_layer: int) -> list[str]:
    return ["embedding"] + [f"block {i}" for i in range(n_layer)]


def top_next(probs: torch.Tensor, itos: list[str], k: int) -> list[list[tuple[str, float]]]:
    """For each position of `probs` [T, V], the k likeliest characters with their probabilities."""
    values, indices = probs.topk(min(k, probs.size(-1)), dim=-1)
    return [[(itos[i], round(p, 4)) for p, i in zip(vs, ix, strict=True)]
            for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)]


def true_next_probability(lens: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """[L+1, T-1]: at each depth, the probability given to the character that really comes next."""
    following = torch.tensor(ids[1:], dtype=torch.long)
    return lens[:, :-1].gather(-1, following.expand(lens.size(0), -1).unsqueeze(-1)).squeeze(-1)


def attended_most(attention: torch.Tensor) -> torch.Tensor:
    """[L, T]: per layer, the key position each query gives the most weight, averaged over heads."""
    return attention.mean(dim=1).argmax(dim=-1)


HABITS = ("itself", "previous character", "two back", "start of the word", "last newline")


def _habit_targets(chars: list[str], query: int) -> tuple[int | None, ...]:
    """The key position each of HABITS points at from `query`; None where there is none. The word start and
    the newline count only further back than two characters, so no key counts for two habits."""
    spaces = [j for j in range(query) if chars[j].isspace()]
    newlines = [j for j in range(query) if chars[j] == "\n"]
    word_start = spaces[-1] + 1 if spaces else 0
    return (
        query,
        query - 1 if query >= 1 else None,
        query - 2 if query >= 2 else None,
        word_start if word_start < query - 2 else None,
        newlines[-1] if newlines and newlines[-1] < query - 2 else None,
    )


def head_habits(attention: torch.Tensor, chars: list[str]) -> torch.Tensor:
    """[L, H, len(HABITS)]: the mean weight each head gives to each habit's target, over the positions
    where that target exists (NaN where it exists nowhere in the prompt)."""
    weights = [[] for _ in HABITS]
    for query in range(len(chars)):
        for i, key in enumerate(_habit_targets(chars, query)):
            if key is not None:
                weights[i].append(attention[:, :, query, key])
    nan = torch.full(attention.shape[:2], float("nan"))
    return torch.stack([torch.stack(w).mean(dim=0) if w else nan for w in weights], dim=-1)


@dataclass
class Habit:
    """The head that shows one of HABITS most, wherever it lives."""

    name: str
    layer: int
    head: int
    weight: float  # its mean weight on the habit's target


def strongest_heads(habits: torch.Tensor) -> list[Habit]:
    """For each of HABITS ([L, H, len(HABITS)] from `head_habits`) the head with the most weight on its target;
    a habit whose target the prompt never has is left out. Each habit is drawn from its own layer: the
    previous-character head of a small model sits in layer 0, not in the last block."""
    found = []
    for i, name in enumerate(HABITS):
        weights = habits[:, :, i]
        if weights.isnan().all():
            continue
        best = int(weights.nan_to_num(-1.0).flatten().argmax())
        layer, head = divmod(best, habits.size(1))
        found.append(Habit(name, layer, head, float(weights[layer, head])))
    return found


def habit_sentence(found: list[Habit]) -> str:
    """One sentence naming, for each habit, the head that has it and how strongly: made from the numbers, so it
    is true of the model it describes."""
    parts = [f"layer {h.layer} head {h.head} puts {h.weight:.2f} of its weight on {_target(h.name)}" for h in found]
    return "The strongest head of each habit: " + "; ".join(parts) + "."


def _target(habit: str) -> str:
    return {"itself": "the character itself", "two back": "the character two back",
            "start of the word": "the first letter of the word", "last newline": "the last newline",
            "previous character": "the previous character"}[habit]


@dataclass
class Projection:
    points: torch.Tensor  # [V, 2]
    explained: tuple[float, float]  # fraction of the variance along each axis


def pca_2d(table: torch.Tensor) -> Projection:
    """The rows of `table` [V, C] on their two principal axes (centred, SVD)."""
    centred = table.float() - table.float().mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    variance = s.square()
    share = (variance[:2] / variance.sum()).tolist()
    return Projection(centred @ vh[:2].T, (share[0], share[1]))


def stream_norms(trace: Trace) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 norm per position [2L+1, T] of the residual stream entering each LayerNorm, and of its output."""
    return trace.ln_inputs.norm(dim=-1), trace.ln_outputs.norm(dim=-1)
