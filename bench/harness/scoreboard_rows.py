"""The rows of `python -m bench.scoreboard`, one entry each in ROWS: what the row says, and the function that
measures it on the demo's model (or reads it from out/) and returns a `Figure`, or raises `Skipped` saying why
it cannot run here. Rows that must be measured side by side (the decoders' tok/s and their ratios) share one
interleaved measurement, made once per run (`Context.decode_rates`); rows read from one benchmark command share its
run (`Context.bench`). Every row names the command of this repository that reproduces it.

Sizes: `Budget.full` fits the whole run in ~15 minutes on 2 cores with the demo's `cpu` preset model (most rows take
well under a minute); `Budget.quick` is for tests on a tiny model.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from bench.harness.machine import ROOT
from gpt.decode.backends.ort_session import default_threads


class Skipped(Exception):
    """A row that cannot run on this machine or with these files; the message says why."""


@dataclass(frozen=True)
class Figure:
    value: str  # what the table shows: "1,499 tok/s, 5.60x PyTorch eager"
    short: str  # the history table's cell: "1,499 (5.60x)"
    values: dict[str, float]  # the numbers behind it
    unit: str
    how: str  # what was measured, and whether it was measured now or read from a file
    command: str = ""  # the command of this repository that reproduces it ("": the scoreboard's, --only this row)
    status: str = "measured"  # or "read"


@dataclass(frozen=True)
class Budget:
    """How much each row measures: full (the real run) or quick (tests, a tiny model)."""

    tokens: int  # new characters per decode run
    rounds: int  # interleaved rounds of the decoders
    spec_rounds: int
    spec_tokens: int
    serve_tokens: int  # new tokens per request of bench.serving
    serve_requests: int  # requests per client
    cold_runs: int
    page_runs: int

    @staticmethod
    def of(quick: bool) -> Budget:
        if quick:
            return Budget(tokens=24, rounds=1, spec_rounds=1, spec_tokens=16, serve_tokens=8, serve_requests=1,
                          cold_runs=1, page_runs=1)
        return Budget(tokens=500, rounds=7, spec_rounds=8, spec_tokens=500, serve_tokens=100, serve_requests=8,
                      cold_runs=5, page_runs=3)


def shown(path: Path) -> str:
    """A path as a user types it: relative to the checkout where it lies inside it."""
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


@dataclass
class Context:
    """What every row works on: the checkpoint directory, its ONNX file, the threads, the budget, a scratch folder,
    the text the prompts come from, and the measurements rows share."""

    ckpt: Path
    onnx: Path
    threads: int
    quick: bool
    scratch: Path
    data: Path
    shared: dict = field(default_factory=dict)

    @property
    def budget(self) -> Budget:
        return Budget.of(self.quick)

    def self_command(self, row: str) -> str:
        """`python -m bench.scoreboard --only ROW` with the options of this run that change the figure."""
        parts = ["python -m bench.scoreboard --only", row]
        if shown(self.ckpt) != "out":
            parts += ["--ckpt", shlex.quote(shown(self.ckpt))]
        if self.onnx.resolve() != (self.ckpt / "model.onnx").resolve():
            parts += ["--onnx", shlex.quote(shown(self.onnx))]
        if self.threads != default_threads():
            parts += ["--threads", str(self.threads)]
        return " ".join(parts + ["--quick"] * self.quick)

    def bench(self, module: str, *args: str) -> tuple[dict, str]:
        """(the JSON that `python -m MODULE ARGS --out SCRATCH/NAME` writes, the command without --out), run once
        per run; a failing command is a Skipped row with its last line of stderr."""
        command = " ".join(["python -m", module, *map(shlex.quote, args)])
        if command not in self.shared:
            out = self.scratch / module.replace(".", "-")
            r = subprocess.run([sys.executable, "-m", module, *args, "--out", str(out)], cwd=ROOT,
                               capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                last = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise Skipped(f"`{command}` failed: {last[:300]}")
            self.shared[command] = json.loads(out.with_suffix(".json").read_text())
        return self.shared[command], command

    @cached_property
    def decode_rates(self) -> dict[str, list[float] | str]:
        from bench.harness.decode_rates import measure

        return measure(self)


@dataclass(frozen=True)
class Row:
    id: str  # for --only, and the history table's column
    label: str  # the history table's column header
    what: str  # the headline table's first column
    measure: Callable[[Context], Figure]


# ----------------------------------------------------------------------------------------------------- rows


def demo(ctx: Context) -> Figure:
    """Read, not measured: training the demo is `make demo`'s 8 minutes, which a 15-minute run cannot repeat."""
    config_path, log_path = ctx.ckpt / "config.json", ctx.ckpt / "log.jsonl"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError):
        raise Skipped(f"{shown(config_path)} is missing or unreadable: run `make demo` first") from None
    if "val_loss" not in config or "iter" not in config:
        raise Skipped(f"{shown(config_path)} has no final val loss: run `make demo` first")
    model = config.get("model", {})
    shape = f"{model.get('n_layer')} x {model.get('n_head')} x {model.get('n_embd')}, block {model.get('block_size')}"
    values = {"val_loss": float(config["val_loss"]), "iterations": int(config["iter"])}
    how = (f"read from {shown(ctx.ckpt)}/, not measured in this run: {config.get('val_loss_kind', 'estimate')} val "
           f"loss, model {shape}")
    try:
        times = [json.loads(line)["time"] for line in log_path.read_text().splitlines() if line.strip()]
        values["minutes"] = (times[-1] - times[0]) / 60
        how += ", minutes from the first evaluation to the last"
    except (OSError, ValueError, KeyError, IndexError):
        pass
    minutes = f" in {values['minutes']:.1f} min" if "minutes" in values else ""
    return Figure(f"{values['val_loss']:.4f} after {values['iterations']:,} iterations{minutes}",
                  f"{values['val_loss']:.4f} ({values['iterations']:,} it)", values, "loss", how,
                  f"make demo (python -m gpt.train --preset cpu --out-dir {shown(ctx.ckpt)})", "read")


def decoder(name: str, versus: str | None, label: str) -> Callable[[Context], Figure]:
    """The row of one decoder of the interleaved measurement: its tok/s, and its ratio to `versus`'s."""

    def measure(ctx: Context) -> Figure:
        rates = ctx.decode_rates
        if isinstance(rates.get(name), str):
            raise Skipped(rates[name])
        rate = statistics.median(rates[name])
        values = {"tokens_per_s": rate}
        value, short = f"{fmt(rate)} tok/s", fmt(rate)
        if versus is not None and isinstance(rates.get(versus), list):
            values["ratio"] = rate / statistics.median(rates[versus])
            value += f", {values['ratio']:.2f}x {label}"
            short += f" ({values['ratio']:.2f}x)"
        b = ctx.budget
        how = (f"batch 1, greedy, {b.tokens} new characters after a {ctx.shared['decode_prompt_len']}-character "
               f"validation prompt, {ctx.threads} thread(s); median of {b.rounds} rounds, every decoder in each round")
        return Figure(value, short, values, "tok/s", how)

    return measure


def speculative(ctx: Context) -> Figure:
    b = ctx.budget
    report, command = ctx.bench("bench.speculative", "--onnx", shown(ctx.onnx), "--rounds", str(b.spec_rounds),
                                "--tokens", str(b.spec_tokens), "--streams", "", "--no-genai",
                                "--threads", str(ctx.threads))
    ratio = {(r["config"].removeprefix("speculative "), r["temperature"]): r["vs_plain"] for r in report["rows"]
             if r["section"] == "batch 1" and r["config"].startswith("speculative ")}
    values = {f"{drafter}_T{t:g}": v for (drafter, t), v in ratio.items()}
    value = "; ".join(f"{d}: {ratio[d, 0.0]:.2f}x greedy, {ratio[d, 0.8]:.2f}x at T 0.8"
                      for d in dict.fromkeys(d for d, _ in ratio))
    how = (f"characters/s of `gpt.sample --speculative` ÷ plain decoding, the same text, batch 1, {b.spec_tokens} "
           f"characters, median of {b.spec_rounds} interleaved rounds")
    main = "distilled" if ("distilled", 0.0) in ratio else next(iter(ratio))[0]  # the engine's drafter
    return Figure(value, f"{ratio[main, 0.0]:.2f}x / {ratio[main, 0.8]:.2f}x ({main})", values, "x plain", how,
                  command)


def serving(ctx: Context) -> tuple[dict, str]:
    b = ctx.budget
    return ctx.bench("bench.serving", "--onnx", shown(ctx.onnx), "--concurrency", "1,16", "--no-genai",
                     "--max-tokens", str(b.serve_tokens), "--requests-per-client", str(b.serve_requests),
                     "--threads", str(ctx.threads))


def engine(ctx: Context) -> Figure:
    report, command = serving(ctx)
    rate = {r["concurrency"]: r["tokens_per_s"] for r in report["rows"] if r["server"] == "gpt.engine in-process"}
    values = {"streams_1": rate[1], "streams_16": rate[16], "ratio": rate[16] / rate[1]}
    how = (f"`gpt.engine.Engine` in-process, {report['slots']} slots, requests of {report['max_tokens']} tokens "
           f"at T 0.8 kept in flight")
    return Figure(f"{fmt(rate[1])} tok/s at 1 stream, {fmt(rate[16])} at 16 ({values['ratio']:.2f}x)",
                  f"{fmt(rate[1])} / {fmt(rate[16])}", values, "tok/s", how, command)


def http(ctx: Context) -> Figure:
    report, command = serving(ctx)
    rate = next(r["tokens_per_s"] for r in report["rows"] if r["server"] == "gpt.serve" and r["concurrency"] == 16)
    values = {"tokens_per_s": rate, "vs_sample": rate / report["sample_batch1_tok_s"]}
    how = (f"`python -m gpt.serve` under 16 streaming clients over HTTP, {report['max_tokens']} tokens per request, "
           "beside one stream of `gpt.sample --backend onnxruntime`")
    return Figure(f"{fmt(rate)} tok/s ({values['vs_sample']:.2f}x one stream of `gpt.sample`)",
                  f"{fmt(rate)} ({values['vs_sample']:.2f}x)", values, "tok/s", how, command)


def cold_start(ctx: Context) -> Figure:
    argv = ["-m", "gpt.sample", "--backend", "onnxruntime", "--onnx", str(ctx.onnx), "--prompt", "ROMEO:",
            "--max-new-tokens", "1", "--stream"]
    seconds = []
    for _ in range(ctx.budget.cold_runs):
        start = time.perf_counter()
        r = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
        seconds.append(time.perf_counter() - start)
        if r.returncode != 0:
            raise Skipped(f"gpt.sample failed: {(r.stderr.strip().splitlines() or ['no output'])[-1]}")
    s = statistics.median(seconds)
    how = (f"a new process, start to exit after its first character: `python -m gpt.sample --backend onnxruntime "
           f"--onnx {shown(ctx.onnx)} --prompt ROMEO: --max-new-tokens 1 --stream`, median of {len(seconds)} "
           "(page cache warm)")
    return Figure(f"{s:.2f} s", f"{s:.2f} s", {"seconds": s}, "s", how)


def browser(ctx: Context) -> Figure:
    from bench.harness.browser import browser_missing, page_rates

    why = browser_missing()
    if why:
        raise Skipped(why)
    web_onnx = ctx.ckpt / "web.onnx"
    if not web_onnx.is_file():  # what `make web` serves: the portable layout, exported once
        web_onnx = ctx.scratch / "web.onnx"
        run("export.onnx", "--ckpt", str(ctx.ckpt), "--attention", "onnx", "--out", str(web_onnx))
    site = ctx.scratch / "site"
    run("export.web", "--onnx", str(web_onnx), "--out", str(site))
    b = ctx.budget
    rate = statistics.median(page_rates(site, "ROMEO:", b.tokens, b.page_runs))
    how = (f"headless Chromium, the page of `make web` (`onnx` layout, onnxruntime-web wasm, 1 thread): its own tok/s "
           f"for ROMEO: + {b.tokens} characters greedy, prefill included, median of {b.page_runs}")
    return Figure(f"{fmt(rate)} tok/s", fmt(rate), {"tokens_per_s": rate}, "tok/s", how)


def run(module: str, *args: str) -> None:
    """A command of the project that a row needs first; its failure is the row's Skipped."""
    r = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise Skipped(f"python -m {module} failed: {(r.stderr.strip().splitlines() or ['no output'])[-1][:300]}")


ROWS: list[Row] = [
    Row("demo", "demo val loss", "`make demo`: the `cpu` preset's full-pass val loss within its 8-minute budget",
        demo),
    Row("torch", "PyTorch tok/s", "sampling, PyTorch eager with a KV cache", decoder("eager-kv", None, "")),
    Row("ort_fp32", "onnxruntime fp32 tok/s", "sampling, onnxruntime fp32 (gqa layout), against PyTorch",
        decoder("ort-fp32", "eager-kv", "PyTorch eager")),
    Row("ort_int8", "int8 tok/s", "sampling, onnxruntime int8, against fp32", decoder("ort-int8", "ort-fp32", "fp32")),
    Row("ort_int4", "int4 tok/s", "sampling, onnxruntime int4, against fp32", decoder("ort-int4", "ort-fp32", "fp32")),
    Row("genai", "genai loop tok/s", "onnxruntime-genai's own C++ loop on the same fp32 file, against our loop",
        decoder("genai-loop", "ort-fp32", "our onnxruntime loop")),
    Row("speculative", "speculative ÷ plain", "speculative decoding ÷ plain decoding at batch 1, the same text",
        speculative),
    Row("engine", "engine tok/s (1 / 16)", "the engine (`gpt.engine`) at 1 and 16 streams", engine),
    Row("http", "HTTP 16 streams tok/s", "the HTTP server (`python -m gpt.serve`) at 16 streams", http),
    Row("cold_start", "cold start", "cold start: a new `gpt.sample` process to its first character", cold_start),
    Row("browser", "browser tok/s", "in a browser tab (headless Chromium, onnxruntime-web)", browser),
]
