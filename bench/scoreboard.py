"""Every headline figure, measured on the machine it runs on, in one run: `python -m bench.scoreboard`
(`make scoreboard`, after `make demo`).

    python -m bench.scoreboard [--ckpt out] [--onnx CKPT/model.onnx] [--only ROW,ROW] [--quick]
                               [--out bench/results/DATE-CPU-scoreboard]

The rows (bench/harness/scoreboard_rows.py): the demo's val loss and iterations (read from the checkpoint's
config.json, which `make demo` wrote); sampling tok/s for PyTorch eager with a KV cache, onnxruntime fp32, int8
and int4 and onnxruntime-genai's own loop on the same file, interleaved, with their ratios; speculative ÷ plain
decoding, greedy and at T 0.8 (bench.speculative); the engine at 1 and 16 streams and the HTTP server at 16
(bench.serving); a new sampler process to its first character; the browser page's tok/s in headless Chromium.
Each row is sized to fit the whole run in ~15 minutes on 2 cores; a row that cannot run here is skipped, saying
why, and the run goes on. `--quick` measures a handful of tokens, for tests.

Writes OUT.json (machine, CPU flags, versions, date, commit, and per row: what, value, unit, status, the command
that reproduces it; checked by bench/harness/scoreboard_file.py) and OUT.md. The README's and the docs' headline
tables are made from the newest such file by `make generated`.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench.harness.cli import add_options, command
from bench.harness.machine import cpu_model, git, this_machine
from bench.harness.results_files import publish, stamp
from bench.harness.scoreboard_file import KIND
from bench.harness.scoreboard_rows import ROWS, Context, Row, Skipped
from bench.report import new_path
from bench.reports.scoreboard import markdown
from gpt.decode.backends.ort_session import default_threads
from gpt.errors import ArgumentParser, GPTError, run_cli

# the CPU flags that set a decode step's speed (SIMD width, bf16 / int8 dot products, matrix units)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
               "amx_bf16", "amx_int8")
VERSIONS = ("torch", "onnxruntime", "onnxruntime-genai", "numpy")


def cpu() -> dict:
    """The CPU's model, physical cores this process may use, logical CPUs and its speed-setting flags."""
    flags: list[str] = []
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith(("flags", "Features")))
        present = set(line.split(":", 1)[1].split())
        flags = [f for f in SPEED_FLAGS if f in present]
    except (OSError, StopIteration):
        pass
    return {"model": cpu_model(), "cores": default_threads(), "logical_cpus": os.cpu_count() or 1, "flags": flags}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def commit() -> str:
    head = git("rev-parse", "--short=10", "HEAD") or "unknown"
    return head + (" (dirty)" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_row(row: Row, ctx: Context) -> dict:
    """The row as the result file holds it: its figure, or skipped with the reason (any failure is one)."""
    head = {"id": row.id, "label": row.label, "what": row.what}
    try:
        f = row.measure(ctx)
    except Skipped as e:
        return head | {"status": "skipped", "why": str(e), "command": ctx.self_command(row.id)}
    except Exception as e:  # a row that breaks must not cost the others: said, and skipped
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        return head | {"status": "skipped", "why": why, "command": ctx.self_command(row.id)}
    return head | asdict(f) | {"command": f.command or ctx.self_command(row.id)}


def chosen(only: str | None) -> list[Row]:
    if not only:
        return ROWS
    known = {r.id: r for r in ROWS}
    wanted = [x.strip() for x in only.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in known]
    if unknown or not wanted:
        raise GPTError(f"--only {only!r}: unknown row {', '.join(unknown) or '(none given)'}; the rows: "
                       f"{', '.join(known)}")
    return [known[x] for x in wanted]


def machine(c: dict) -> str:
    """'2-core AMD EPYC 9B14 (AVX-512, AVX512-BF16, VNNI, no AMX)': the table's machine column."""
    f = set(c["flags"])
    simd = "AVX-512" if "avx512f" in f else "AVX2" if "avx2" in f else "no AVX2"
    extra = [x for x, flag in (("AVX512-BF16", "avx512_bf16"), ("VNNI", "avx512_vnni")) if flag in f]
    return f"{this_machine()} ({', '.join([simd, *extra, 'AMX' if 'amx_tile' in f else 'no AMX'])})"


def main(argv: Sequence[str] | None = None) -> int:
    from tqdm import tqdm

    p = ArgumentParser(prog="python -m bench.scoreboard", description=__doc__)
    p.add_argument("--ckpt", type=Path, default=Path("out"), help="the demo's checkpoint directory (default: out)")
    add_options(p, threads="threads of every decoder and server (default: physical cores)", text=True,
                out="write OUT.json and OUT.md (default: bench/results/DATE-CPU-scoreboard)")
    p.add_argument("--onnx", type=Path, default=None, help="its gqa export (default: CKPT/model.onnx)")
    p.add_argument("--only", default=None, help=f"comma-separated rows (default: all: {', '.join(r.id for r in ROWS)})")
    p.add_argument("--quick", action="store_true", help="a handful of tokens and one round per row (tests)")
    args = p.parse_args(argv)
    rows = chosen(args.only)
    onnx = args.onnx or args.ckpt / "model.onnx"
    if not onnx.is_file():
        raise GPTError(f"{onnx} is missing: run `make demo` (it trains into out/ and exports out/model.onnx) first")
    if not args.data.is_file():
        raise GPTError(f"{args.data} is missing: run `python -m gpt.data` first")
    if args.quick and args.out is None:
        raise GPTError("--quick is a smoke run, not a measurement: give it --out outside bench/results/")
    out = args.out or new_path("-scoreboard").with_suffix("")
    print(f"scoreboard: {len(rows)} rows on {this_machine()}, {onnx}; writing {out}.json", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="scoreboard-") as scratch:
        ctx = Context(args.ckpt, onnx, args.threads or default_threads(), args.quick, Path(scratch), args.data)
        results = []
        bar = tqdm(rows, unit="row", dynamic_ncols=True, file=sys.stderr)
        for row in bar:
            bar.set_description(row.id)
            results.append(run_row(row, ctx))
            r = results[-1]
            bar.write(f"{row.id}: {r.get('value') or 'skipped: ' + r['why']}", file=sys.stderr)
    c = cpu()
    report = stamp({"kind": KIND, "commit": commit(), "cpu": c, "versions": versions(), "model": str(onnx),
                    "threads": ctx.threads, "quick": args.quick, "rows": results}, command(p, argv), machine(c))
    publish(report, out, markdown(report))
    return 0


if __name__ == "__main__":
    run_cli(main)
