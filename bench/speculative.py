"""The speculative-decoding benchmark: characters per second at batch 1, plain against speculative, greedy and
sampled, beside onnxruntime-genai's own C++ loop (and its own n-gram speculation) on the same file; then the
engine at 1, 4 and 16 streams with and without speculation. One process, every configuration in turn in each
round (A B C A B C ...), medians over the rounds: the ratios compare figures taken side by side.

    python -m bench.speculative --onnx out/model.onnx [--draft out-cpu/model.onnx] [--tokens 500] [--rounds 5]
                                [--streams 1,4,16] [--threads 1] [--no-genai] [--out bench/results/NAME]

Prompts are windows of the validation split, so the n-gram drafter meets text it has not indexed. Every
speculative run's text is checked against plain decoding's for the same prompt and seed (they must be the
same: `gpt.decode.speculative.loop`) before its time counts. Writes NAME.json (with its machine, date and command) and
NAME.md.
"""

from __future__ import annotations

import argparse
import json
import queue
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.results_files import stamp
from bench.serving import ROOT, val_prompts
from gpt.decode.backends.ort_decoder import open_onnx
from gpt.decode.loop import generate
from gpt.decode.sampler import Sampler, SamplingParams
from gpt.decode.speculative.drafters import check_speculative, open_drafter
from gpt.decode.speculative.loop import DEFAULT_DRAFT_TOKENS, SpeculativeStats, generate_speculative
from gpt.engine import Engine, Event, GenerationParams
from gpt.errors import ArgumentParser, GPTError, run_cli
from gpt.tokenizer import CharTokenizer

TEMPERATURES = (0.0, 0.8)
GENAI_PROMPT = 16  # characters of prompt in the rows beside onnxruntime-genai, so it writes block_size - 16


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bench.speculative", description=__doc__)
    p.add_argument("--onnx", type=Path, required=True, help="gqa file (with genai_config.json for the genai rows)")
    p.add_argument("--draft", type=Path, default=None, help="a smaller gqa file to draft with, too")
    p.add_argument("--tokens", type=int, default=500, help="new characters per generation (default 500)")
    p.add_argument("--rounds", type=int, default=5, help="rounds over every configuration (default 5)")
    p.add_argument("--prompts", type=int, default=3, help="validation prompts, one per round in turn (default 3)")
    p.add_argument("--draft-tokens", type=int, default=DEFAULT_DRAFT_TOKENS, help="K (default %(default)s)")
    p.add_argument("--streams", default="1,4,16", help="engine rows: comma-separated stream counts ('' = none)")
    p.add_argument("--engine-tokens", type=int, default=200, help="new characters per engine request")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads everywhere (default 1)")
    p.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai's rows")
    p.add_argument("--ngram-text", type=Path, default=None, help="training text for the ngram index, if not built")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "tinyshakespeare" / "input.txt")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md")
    return p


class Runner:
    """One timed configuration: `run(prompt_ids, temperature, seed) -> ids`; `stats` where it speculates."""

    def __init__(self, name: str, run: Callable[[list[int], float, int], list[int]],
                 stats: SpeculativeStats | None = None, checked: bool = False):
        self.name, self.run, self.stats, self.checked = name, run, stats, checked


def open_drafters(args, model) -> dict:
    sources = {"ngram": "ngram"} | ({"draft model": str(args.draft)} if args.draft else {})
    return {name: open_drafter(spec, model, args.threads, args.ngram_text, say=print) for name, spec in sources.items()}


def our_runners(model, drafters: dict, tokens: int, draft_tokens: int) -> list[Runner]:
    """Plain decoding (`gpt.decode.loop`, what `gpt.sample --backend onnxruntime` runs) and one speculative runner per
    drafter, `tokens` new characters each."""
    runners = [Runner("plain", lambda ids, t, s: generate(model, ids, tokens, Sampler(SamplingParams(t, seed=s)))[0]
                      .tolist())]
    for name, drafter in drafters.items():
        stats = SpeculativeStats()
        runners.append(Runner(f"speculative {name}", lambda ids, t, s, d=drafter, st=stats: generate_speculative(
            model, ids, tokens, SamplingParams(t, seed=s), d, draft_tokens, stats=st), stats, checked=True))
    return runners


def genai_runners(onnx: Path, threads: int, tokens: int, draft_tokens: int) -> list[Runner]:
    """onnxruntime-genai's own loop on the file (prompt + tokens within block_size: it slides no window),
    plain and with its n-gram speculation (0.18: `speculative.ngram_size`, `max_draft_tokens`)."""
    try:
        import onnxruntime_genai as og
    except ImportError:
        print("no onnxruntime-genai: its rows are skipped")
        return []
    if not onnx.with_name("genai_config.json").is_file():
        print(f"no genai_config.json beside {onnx} (export with --genai): onnxruntime-genai's rows are skipped")
        return []
    config = og.Config(str(onnx.parent))
    config.overlay(json.dumps({"model": {"decoder": {"filename": onnx.name,
                                                     "session_options": {"intra_op_num_threads": threads}}}}))
    model = og.Model(config)

    def run(ids: list[int], temperature: float, seed: int, speculative: bool) -> list[int]:
        params = og.GeneratorParams(model)
        length = len(ids) + tokens
        params.set_search_options(max_length=length, min_length=length, do_sample=temperature > 0,
                                  **({"temperature": temperature, "top_k": 0, "random_seed": seed}
                                     if temperature > 0 else {}))
        if speculative:
            params.set_speculative_options(ngram_size=3, max_draft_tokens=draft_tokens)
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([ids], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
        return generator.get_sequence(0)[len(ids):].tolist()

    runners = [Runner("onnxruntime-genai loop", lambda ids, t, s: run(ids, t, s, False))]
    try:
        run([0, 1, 2], 0.0, 0, True)
        runners.append(Runner("onnxruntime-genai ngram speculation", lambda ids, t, s: run(ids, t, s, True)))
    except Exception as e:  # its speculation may refuse a file or an option: say so and go on
        print(f"onnxruntime-genai's n-gram speculation did not run on {onnx}: {' '.join(str(e).split())[:200]}")
    return runners


def time_batch1(runners: list[Runner], prompts: list[list[int]], rounds: int, temperature: float) -> dict:
    """{name: [characters/s per round]}; speculative texts checked against plain's."""
    rates: dict[str, list[float]] = {r.name: [] for r in runners}
    for i in range(rounds):
        ids, seed = prompts[i % len(prompts)], 1000 + i
        reference = None
        for r in runners:
            t0 = time.perf_counter()
            out = r.run(ids, temperature, seed)
            rates[r.name].append(len(out) / (time.perf_counter() - t0))
            if r.name == "plain":
                reference = out
            elif r.checked and out != reference:
                raise GPTError(f"{r.name} wrote another text than plain decoding (T={temperature}, seed {seed})")
    return rates


def engine_rate(onnx: Path, prompts: list[str], streams: int, tokens: int, temperature: float, threads: int,
                speculative: str | None, ngram_text: Path | None) -> tuple[float, dict]:
    """Aggregate characters/s of `streams` concurrent requests (2 x streams in all, `streams` in flight)."""
    options = {"speculative": speculative, "ngram_text": ngram_text, "say": print} if speculative else {}
    events: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
    with Engine(onnx, slots=max(streams, 1), threads=threads, max_queue=4 * streams, **options) as engine:
        total, sent, done, chars = 2 * streams, 0, 0, 0
        start = time.perf_counter()

        def submit(i: int) -> None:
            params = GenerationParams(max_tokens=tokens, temperature=temperature, seed=i)
            engine.submit(prompts[i % len(prompts)], params, lambda e, i=i: events.put((i, e)))

        for _ in range(streams):
            submit(sent)
            sent += 1
        while done < total:
            _, event = events.get(timeout=600)
            if event.kind == "token":
                chars += len(event.text)
            elif event.kind == "error":
                raise GPTError(f"engine request failed: {event.error}")
            else:
                done += 1
                if sent < total:
                    submit(sent)
                    sent += 1
        return chars / (time.perf_counter() - start), engine.stats()


def median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1 or args.tokens < 1:
        raise GPTError("--rounds and --tokens must be >= 1")
    model = check_speculative(open_onnx(args.onnx, threads=args.threads), args.draft_tokens, "--draft-tokens")
    tok = CharTokenizer(model.vocab)
    prompt_len = min(64, model.block_size // 2)
    texts = val_prompts(args.data, model.vocab, prompt_len, max(args.prompts, 1))
    prompts = [tok.encode(t) for t in texts]
    rows: list[dict] = []
    drafters = open_drafters(args, model)
    runners = our_runners(model, drafters, args.tokens, args.draft_tokens)
    short = [ids[:GENAI_PROMPT] for ids in prompts]
    genai_tokens = model.block_size - GENAI_PROMPT  # genai slides no window: its runs stop at block_size
    genai = [] if args.no_genai else genai_runners(args.onnx, args.threads, genai_tokens, args.draft_tokens)
    for temperature in TEMPERATURES:
        rates = time_batch1(runners, prompts, args.rounds, temperature)
        plain = median(rates["plain"])
        for r in runners:
            row = {"section": "batch 1", "config": r.name, "temperature": temperature, "tokens": args.tokens,
                   "chars_per_s": median(rates[r.name]), "vs_plain": median(rates[r.name]) / plain}
            if r.stats is not None and r.stats.runs:
                row["chars_per_run"] = (sum(r.stats.accepted) + r.stats.runs) / r.stats.runs
                row["accepted_share"] = sum(r.stats.accepted) / max(sum(r.stats.proposed), 1)
            rows.append(row)
        if genai:  # at genai's length, ours beside it in the same rounds
            rates = time_batch1(our_runners(model, drafters, genai_tokens, args.draft_tokens) + genai, short,
                                args.rounds, temperature)
            for name, values in rates.items():
                rows.append({"section": f"batch 1, {genai_tokens} characters (within block_size, as genai runs)",
                             "config": name, "temperature": temperature, "tokens": genai_tokens,
                             "chars_per_s": median(values),
                             "vs_genai_loop": median(values) / median(rates["onnxruntime-genai loop"])})
        print_rows([r for r in rows if r["temperature"] == temperature])
    streams = [int(s) for s in args.streams.split(",") if s.strip()]
    for temperature in TEMPERATURES:
        for n in streams:
            plain_rates, spec_rates, stats = [], [], {}
            for _ in range(max(1, args.rounds // 2)):
                plain_rates.append(engine_rate(args.onnx, texts, n, args.engine_tokens, temperature, args.threads,
                                               None, None)[0])
                rate, stats = engine_rate(args.onnx, texts, n, args.engine_tokens, temperature, args.threads,
                                          "ngram", args.ngram_text)
                spec_rates.append(rate)
            rows.append({"section": "engine", "config": f"{n} streams", "temperature": temperature,
                         "plain_chars_per_s": median(plain_rates), "speculative_chars_per_s": median(spec_rates),
                         "vs_plain": median(spec_rates) / median(plain_rates),
                         "draft_runs": stats.get("draft_runs", 0), "draft_accepted": stats.get("draft_accepted", 0)})
            print_rows(rows[-1:])
    report = stamp({"model": str(args.onnx), "block_size": model.block_size, "n_layer": model.meta.n_layer,
                    "n_embd": model.meta.n_embd, "threads": args.threads, "rounds": args.rounds, "rows": rows})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
        args.out.with_suffix(".md").write_text(markdown(report))
        print(f"wrote {args.out}.json and .md")
    return 0


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def markdown(report: dict) -> str:
    return "\n".join([f"# Speculative decoding, {report['machine']}, {report['date']}", "", f"`{report['command']}`",
                      "", tables(report)])


LABELS = {"config": "", "temperature": "T", "tokens": "characters", "chars_per_s": "characters/s",
          "vs_plain": "× plain", "chars_per_run": "characters per run", "accepted_share": "drafts kept",
          "vs_genai_loop": "× genai loop", "plain_chars_per_s": "plain characters/s",
          "speculative_chars_per_s": "speculative characters/s", "draft_runs": "verify runs",
          "draft_accepted": "drafts kept"}


# issue 32's targets, per model: (what, the measured ratio it reads, at least)
TARGETS = {
    "cpu": [("batch 1, greedy: speculative ÷ plain", ("batch 1", 0.0, "vs_plain"), 2.0),
            ("batch 1, T 0.8: speculative ÷ plain", ("batch 1", 0.8, "vs_plain"), 1.5),
            ("batch 1, greedy: speculative ÷ onnxruntime-genai's loop", ("genai", 0.0, "vs_genai_loop"), 1.5),
            ("engine, 1-4 streams (the least of T 0 and 0.8)", ("engine 1-4", None, "vs_plain"), 1.3),
            ("engine, 16 streams (the least of T 0 and 0.8)", ("engine 16", None, "vs_plain"), 0.95)],
    "shakespeare": [("batch 1, greedy: speculative ÷ plain", ("batch 1", 0.0, "vs_plain"), 1.5)],
}


def measured(report: dict, where: tuple) -> float:
    """The best speculative configuration's ratio at batch 1, or the least engine ratio over the streams."""
    section, temperature, key = where
    rows = report["rows"]
    if section.startswith("engine"):
        streams = range(1, 5) if section == "engine 1-4" else (16,)
        return min(r[key] for r in rows if r["section"] == "engine" and int(r["config"].split()[0]) in streams)
    wanted = (lambda name: name != "batch 1") if section == "genai" else (lambda name: name == "batch 1")
    return max(r[key] for r in rows if r["section"].startswith("batch 1") and wanted(r["section"])
               and r["temperature"] == temperature and r["config"].startswith("speculative"))


def tables(report: dict, targets: str = "") -> str:
    """The report's rows as one Markdown table per section, then the targets of `targets` (a key of TARGETS)
    against what was measured (the docs page shows these, bench/tables.py)."""
    lines = [f"{report['model']} ({report['n_layer']} layers × {report['n_embd']}, block {report['block_size']}), "
             f"{report['threads']} onnxruntime thread(s), medians of {report['rounds']} rounds, configurations "
             "interleaved; every speculative text checked equal to plain decoding's.", ""]
    for section in dict.fromkeys(r["section"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["section"] == section]
        keys = [k for k in rows[0] if k != "section"]
        lines += [f"**{section}**", "", "| " + " | ".join(LABELS.get(k, k) for k in keys) + " |",
                  "|" + "---|" * len(keys)]
        for r in rows:
            lines.append("| " + " | ".join(fmt(k, r.get(k)) for k in keys) + " |")
        lines.append("")
    if targets:
        lines += ["**the targets**", "", "| target | at least | measured | |", "|---|---|---|---|"]
        for what, where, least in TARGETS[targets]:
            got = measured(report, where)
            verdict = "met" if got >= least else f"missed by {least - got:.2f}"
            lines.append(f"| {what} | {least:.2f}× | {got:.2f}× | {verdict} |")
        lines.append("")
    return "\n".join(lines)


def fmt(key: str, value) -> str:
    if not isinstance(value, float):
        return "" if value is None else str(value)
    if key.startswith("vs_"):
        return f"**{value:.2f}×**"
    if key == "accepted_share":
        return f"{value:.0%}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


if __name__ == "__main__":
    run_cli(main)
