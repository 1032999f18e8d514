"""The report page, index.html: the figures (relative links, so the folder opens from disk) with one sentence
each, and the tables behind them. No scripts, no network."""

from __future__ import annotations

from html import escape

from gpt.inspect.analysis import HABITS, habit_sentence, shown, strongest_heads
from gpt.inspect.findings import Findings

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
img { max-width: 100%; border: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 2px 5px; text-align: center; vertical-align: top; }
th { background: #f4f4f4; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _char(c: str) -> str:
    return f"<code>{escape(shown(c))}</code>"


def _top(top: list[tuple[str, float]]) -> str:
    return "<br>".join(f"{_char(c)} {p:.2f}" for c, p in top)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(src: str, sentence: str) -> str:
    return f'<figure><img src="{escape(src)}" alt="{escape(sentence)}"><figcaption>{sentence}</figcaption></figure>'


def _attended_table(f: Findings) -> str:
    chars = f.chars
    rows = [[f"layer {layer}"] + [f"{_char(chars[k])} ({k - t:+d})" if k != t else f"{_char(chars[k])} (itself)"
                                  for t, k in enumerate(f.attended[layer].tolist())]
            for layer in range(f.attended.size(0))]
    return _table(["reading →"] + [_char(c) for c in chars], rows)


def _habits_table(f: Findings) -> str:
    """Heads × habits, the strongest head of each habit in bold."""
    habits = f.habits.flatten(0, 1)  # [L·H, habit]
    strongest = habits.nan_to_num(-1.0).argmax(dim=0).tolist()
    n_head = f.habits.size(1)

    def cell(row: int, habit: int) -> str:
        value = habits[row, habit].item()
        text = "–" if value != value else f"{value:.2f}"  # NaN: the prompt has no such target
        return f"<b>{text}</b>" if row == strongest[habit] and value == value else text

    rows = [[f"layer {row // n_head}, head {row % n_head}"] + [cell(row, h) for h in range(len(HABITS))]
            for row in range(habits.size(0))]
    return _table(["head"] + list(HABITS), rows)


def _lens_table(f: Findings) -> str:
    chars = f.chars
    following = [_char(c) for c in chars[1:]] + ["?"]
    rows = [[name] + [_top(top[:3]) for top in depth] for name, depth in zip(f.depths, f.lens_top, strict=True)]
    rows.append(["true next"] + following)
    return _table(["depth \\ reading →"] + [_char(c) for c in chars], rows)


def _final_table(f: Findings) -> str:
    return _table(["reading →"] + [_char(c) for c in f.chars], [["model's top-k"] + [_top(top) for top in f.final_top]])


def render(f: Findings, figure_files: dict[str, str], checkpoint: str) -> str:
    compare = len(f.embedding) > 1
    embedding_sentence = (
        "Every character's learned embedding vector, projected onto its two main directions (PCA) and coloured by "
        "class: characters that occur in similar contexts (vowels, upper-case letters, punctuation) drift together"
        + (" — on the left the same table before training, a structureless cloud." if compare else ".")
    )
    sections = [
        ("1. Attention maps", _figure(figure_files["attention"], (
            "One heatmap per layer and head: row i is the character being read, column j the weight it gives "
            "character j; the upper triangle is empty because causal attention can only look back.")),
         "<p>Per layer, the character each position attends to most (weights averaged over the heads; "
         "offset from the position being read):</p>" + _attended_table(f)
         + _figure(figure_files["habits"], escape(habit_sentence(strongest_heads(f.habits))))
         + "<p>Each head's habits: its mean weight on the character itself, the previous one, the one before "
         "that, the first letter of the current word and the last newline (the last two only when further back "
         "than two characters; – where the prompt has none). The strongest head of each habit is in bold.</p>"
         + _habits_table(f)),
        ("2. The embedding map", _figure(figure_files["embedding"], embedding_sentence), ""),
        ("3. Predictions layer by layer (logit lens)", _figure(figure_files["logit_lens"], (
            "The residual stream read out after the embedding and after each block through the final LayerNorm "
            "and head: the likeliest next character at each depth, shaded by its probability; the last row is "
            "the model's own prediction.")),
         _figure(figure_files["true_next"], (
             "The probability given to the character that really follows, at each depth: the prediction is "
             "assembled block by block.")) + "<p>Top 3 at each depth:</p>" + _lens_table(f)
         + "<p>The model's final top-k:</p>" + _final_table(f)),
        ("4. Residual stream and LayerNorm", _figure(figure_files["norms"], (
            "The norm of the residual stream entering each LayerNorm grows as every block adds to it (left); each "
            "LayerNorm hands on a vector of a steady size (right), whatever the depth.")), ""),
    ]
    body = "".join(f"<h2>{title}</h2>{main}{extra}" for title, main, extra in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>gpt.inspect: '
            f"{escape(f.prompt)}</title><style>{STYLE}</style></head><body><h1>Inside the model</h1>"
            f"<p>Prompt <code>{escape(f.prompt)}</code> ({len(f.prompt)} characters), checkpoint "
            f"<code>{escape(checkpoint)}</code>.</p>{body}</body></html>\n")
