"""The speculative-decoding benchmark: characters per second at batch 1, plain against speculative, greedy and
sampled, beside onnxruntime-genai's own C++ loop (and its own n-gram speculation) on the same file; then the
engine at 1, 4 and 16 streams with and without speculation. One process, every configuration in turn in each
round (A B C A B C ...), medians over the rounds: the ratios compare figures taken side by side.

    python -m bench.speculative --onnx out/model.onnx [--draft out-cpu/model.onnx] [--tokens 500] [--rounds 5]
                                [--streams 1,4,16] [--threads 1] [--no-genai] [--out bench/results/NAME]

Prompts are windows of the validation split, so the n-gram drafter meets text it has not indexed. Every
speculative run's text is checked against plain decoding's for the same prompt and seed (they must be the
same: `gpt.decode.speculative.loop`) before its time counts. Writes NAME.json (with its machine, date and command) and
NAME.md (bench/reports/speculative.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bench.harness.cli import add_options, command
from bench.harness.engines import keep_in_flight
from bench.harness.genai import genai_missing, open_genai
from bench.harness.results_files import publish, stamp
from bench.harness.server import val_prompts
from bench.reports.speculative import markdown
from gpt.decode.backends.ort_decoder import OrtDecoder, open_onnx
from gpt.decode.loop import generate
from gpt.decode.sampler import Sampler, SamplingParams
from gpt.decode.speculative.drafters import check_speculative, open_drafter
from gpt.decode.speculative.loop import DEFAULT_DRAFT_TOKENS, Drafter, SpeculativeStats, generate_speculative
from gpt.engine import Engine, GenerationParams
from gpt.errors import ArgumentParser, GPTError, flag_names, run_cli
from gpt.tokenizer import CharTokenizer

TEMPERATURES = (0.0, 0.8)
ENGINE_DRAFTER = "distilled"  # the drafter the engine rows speculate with (the one that keeps most when sampling)
GENAI_PROMPT = 16  # characters of prompt in the rows beside onnxruntime-genai, so it writes block_size - 16


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bench.speculative", description=__doc__)
    add_options(p, onnx="gqa file (with genai_config.json for the genai rows)", threads="onnxruntime threads "
                "everywhere (default 1)", threads_default=1, text=True, out="write OUT.json and OUT.md")
    p.add_argument("--draft", type=Path, default=None, help="a smaller gqa file to draft with, too")
    p.add_argument("--tokens", type=int, default=500, help="new characters per generation (default 500)")
    p.add_argument("--rounds", type=int, default=5, help="rounds over every configuration (default 5)")
    p.add_argument("--prompts", type=int, default=3, help="validation prompts, one per round in turn (default 3)")
    p.add_argument("--draft-tokens", type=int, default=DEFAULT_DRAFT_TOKENS, help="K (default %(default)s)")
    p.add_argument("--streams", default="1,4,16", help="engine rows: comma-separated stream counts ('' = none)")
    p.add_argument("--engine-tokens", type=int, default=200, help="new characters per engine request")
    p.add_argument("--no-genai", action="store_true", help="skip onnxruntime-genai's rows")
    p.add_argument("--ngram-text", type=Path, default=None, help="training text for the ngram index, if not built")
    return p


class Runner:
    """One timed configuration: `run(prompt_ids, temperature, seed) -> ids`; `stats` where it speculates."""

    def __init__(self, name: str, run: Callable[[list[int], float, int], list[int]],
                 stats: SpeculativeStats | None = None, checked: bool = False):
        self.name, self.run, self.stats, self.checked = name, run, stats, checked


def open_drafters(args: argparse.Namespace, model: OrtDecoder) -> dict[str, Drafter]:
    sources = {"ngram": "ngram", "distilled": "distilled"} | ({"draft model": str(args.draft)} if args.draft else {})
    return {name: open_drafter(spec, model, args.threads, args.ngram_text, say=print) for name, spec in sources.items()}


def our_runners(model: OrtDecoder, drafters: dict[str, Drafter], tokens: int, draft_tokens: int) -> list[Runner]:
    """Plain decoding (`gpt.decode.loop`, what `gpt.sample --backend onnxruntime` runs) and one speculative runner per
    drafter, `tokens` new characters each."""
    runners = [Runner("plain", lambda ids, t, s: generate(model, ids, tokens, Sampler(SamplingParams(t, seed=s)))[0]
                      .tolist())]
    for name, drafter in drafters.items():
        stats = SpeculativeStats()
        runners.append(Runner(f"speculative {name}", lambda ids, t, s, d=drafter, st=stats: generate_speculative(
            model, ids, tokens, SamplingParams(t, seed=s), d, draft_tokens, stats=st), stats, checked=True))
    return runners


def genai_runners(onnx: Path, threads: int, tokens: int, draft_tokens: int, draft: Path | None) -> list[Runner]:
    """onnxruntime-genai's own loop on the file (prompt + tokens within block_size: it slides no window),
    plain, with its n-gram speculation (0.18: `speculative.ngram_size`, `max_draft_tokens`) and, given a draft
    file with its genai_config.json, with its draft-model speculation (the config's `model.draft` section)."""
    why = genai_missing(onnx)
    if why:
        print(f"onnxruntime-genai's rows are skipped: {why}")
        return []
    og, model = open_genai(onnx, threads)

    def runner(name: str, model, speculative: dict) -> Runner | None:
        def run(ids: list[int], temperature: float, seed: int) -> list[int]:
            params = og.GeneratorParams(model)
            length = len(ids) + tokens
            params.set_search_options(max_length=length, min_length=length, do_sample=temperature > 0,
                                      **({"temperature": temperature, "top_k": 0, "random_seed": seed}
                                         if temperature > 0 else {}))
            if speculative:
                params.set_speculative_options(**speculative)
            generator = og.Generator(model, params)
            generator.append_tokens(np.asarray([ids], dtype=np.int32))
            while not generator.is_done():
                generator.generate_next_token()
            return generator.get_sequence(0)[len(ids):].tolist()

        try:
            run([0, 1, 2], 0.0, 0)
        except Exception as e:  # its speculation may refuse a file or an option: say so and go on
            print(f"{name} did not run on {onnx}: {' '.join(str(e).split())[:200]}")
            return None
        return Runner(name, run)

    loop = runner("onnxruntime-genai loop", model, {})
    if loop is None:
        return []  # the rows beside genai are ratios to its loop
    ngram = {"ngram_size": 3, "max_draft_tokens": draft_tokens}
    runners = [loop, runner("onnxruntime-genai ngram speculation", model, ngram)]
    why = None if draft is None else genai_missing(draft)
    if why:
        print(f"onnxruntime-genai's draft-model speculation is skipped: {why}")
    elif draft is not None:
        try:
            with_draft = open_genai(onnx, threads, draft)[1]
        except Exception as e:  # a draft it cannot load: say so and go on
            print(f"onnxruntime-genai did not load {draft} as a draft: {' '.join(str(e).split())[:200]}")
        else:
            runners.append(runner("onnxruntime-genai draft-model speculation", with_draft,
                                  {"max_draft_tokens": draft_tokens}))
    return [r for r in runners if r is not None]


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
    with Engine(onnx, slots=max(streams, 1), threads=threads, max_queue=4 * streams, **options) as engine:
        load = keep_in_flight(engine, prompts, lambda i: GenerationParams(max_tokens=tokens, temperature=temperature,
                                                                          seed=i), streams, 2 * streams)
        failed = [r.error or "no answer in time" for r in load.results if not r.ok]
        if failed:
            raise GPTError(f"engine request failed: {failed[0]}")
        return sum(r.tokens for r in load.results) / load.wall_s, engine.stats()


def median(xs: Sequence[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def batch1_rows(args: argparse.Namespace, model: OrtDecoder, drafters: dict[str, Drafter], runners: list[Runner],
                genai: list[Runner], prompts: list[list[int]], temperature: float) -> list[dict]:
    """Batch 1 at `temperature`: our runners at --tokens, then (with genai's runners) ours beside genai's at
    genai's length, in the same rounds."""
    rates = time_batch1(runners, prompts, args.rounds, temperature)
    plain = median(rates["plain"])
    rows = []
    for r in runners:
        row = {"section": "batch 1", "config": r.name, "temperature": temperature, "tokens": args.tokens,
               "chars_per_s": median(rates[r.name]), "vs_plain": median(rates[r.name]) / plain}
        if r.stats is not None and r.stats.runs:
            row["chars_per_run"] = (sum(r.stats.accepted) + r.stats.runs) / r.stats.runs
            row["accepted_share"] = sum(r.stats.accepted) / max(sum(r.stats.proposed), 1)
        rows.append(row)
    if genai:
        genai_tokens = model.block_size - GENAI_PROMPT  # genai slides no window: its runs stop at block_size
        rates = time_batch1(our_runners(model, drafters, genai_tokens, args.draft_tokens) + genai,
                            [ids[:GENAI_PROMPT] for ids in prompts], args.rounds, temperature)
        for name, values in rates.items():
            rows.append({"section": f"batch 1, {genai_tokens} characters (within block_size, as genai runs)",
                         "config": name, "temperature": temperature, "tokens": genai_tokens,
                         "chars_per_s": median(values),
                         "vs_genai_loop": median(values) / median(rates["onnxruntime-genai loop"])})
    return rows


def engine_row(args: argparse.Namespace, texts: list[str], streams: int, temperature: float) -> dict:
    """The engine at `streams` streams, plain and speculating with ENGINE_DRAFTER in turns."""
    plain_rates, spec_rates, stats = [], [], {}
    for _ in range(max(1, args.rounds // 2)):
        plain_rates.append(engine_rate(args.onnx, texts, streams, args.engine_tokens, temperature, args.threads,
                                       None, None)[0])
        rate, stats = engine_rate(args.onnx, texts, streams, args.engine_tokens, temperature, args.threads,
                                  ENGINE_DRAFTER, args.ngram_text)
        spec_rates.append(rate)
    return {"section": f"engine, speculating with {ENGINE_DRAFTER}", "config": f"{streams} streams",
            "temperature": temperature,
            "plain_chars_per_s": median(plain_rates), "speculative_chars_per_s": median(spec_rates),
            "vs_plain": median(spec_rates) / median(plain_rates),
            "draft_runs": stats.get("draft_runs", 0), "draft_accepted": stats.get("draft_accepted", 0)}


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.rounds < 1 or args.tokens < 1:
        raise GPTError("--rounds and --tokens must be >= 1")
    with flag_names("draft_tokens"):
        model = check_speculative(open_onnx(args.onnx, threads=args.threads), args.draft_tokens)
    tok = CharTokenizer(model.vocab)
    texts = val_prompts(args.data, model.vocab, min(64, model.block_size // 2), max(args.prompts, 1))
    prompts = [tok.encode(t) for t in texts]
    drafters = open_drafters(args, model)
    runners = our_runners(model, drafters, args.tokens, args.draft_tokens)
    genai = [] if args.no_genai else genai_runners(args.onnx, args.threads, model.block_size - GENAI_PROMPT,
                                                   args.draft_tokens, args.draft)
    rows: list[dict] = []
    for temperature in TEMPERATURES:
        rows += batch1_rows(args, model, drafters, runners, genai, prompts, temperature)
        print_rows([r for r in rows if r["temperature"] == temperature])
    streams = [int(s) for s in args.streams.split(",") if s.strip()]
    for temperature in TEMPERATURES:
        for n in streams:
            rows.append(engine_row(args, texts, n, temperature))
            print_rows(rows[-1:])
    report = stamp({"model": str(args.onnx), "block_size": model.block_size, "n_layer": model.meta.n_layer,
                    "n_embd": model.meta.n_embd, "threads": args.threads, "rounds": args.rounds, "rows": rows},
                   command(p, argv))
    publish(report, args.out, markdown(report))
    return 0


def print_rows(rows: list[dict]) -> None:
    for row in rows:
        print("  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    run_cli(main)
