"""The serving benchmark's report (bench.serving writes it, bench.reports.tables shows it): one row per server and
concurrency against `gpt.sample` batch 1, and the chart of throughput and p99 latencies against concurrency."""

from __future__ import annotations

from pathlib import Path

from bench.harness.plan import SERVING_TEMPERATURE
from bench.reports.chart import pyplot, save


def markdown(report: dict) -> str:
    base = report["sample_batch1_tok_s"]
    lines = [f"{report['file']} · {report['cpu']} · {report['threads']} thread(s) · {report['slots']} slots · "
             f"prompt {report['prompt_len']} + {report['max_tokens']} new tokens, T={SERVING_TEMPERATURE} · "
             f"`gpt.sample` batch 1: {base:,.0f} tok/s (step {1e3 / base:.2f} ms)", "",
             "| server | C | requests ok / failed | tok/s | × batch 1 | TTFT p50 / p99 ms | ITL p50 / p99 ms |",
             "|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['completed']} / {r['failed']} | "
                     f"{r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / base:.2f} | {r['ttft_p50_ms']:.1f} / "
                     f"{r['ttft_p99_ms']:.1f} | {r['itl_p50_ms']:.2f} / {r['itl_p99_ms']:.2f} |")
    lines += [f"\n{name}: not run: {why}" for name, why in report.get("skipped", {}).items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 3.8))
    for name, style in (("gpt.serve", "o-"), ("gpt.engine in-process", "^-"), ("onnxruntime-genai Engine", "s--")):
        rows = [r for r in report["rows"] if r["server"] == name]
        if not rows:
            continue
        c = [r["concurrency"] for r in rows]
        a.plot(c, [r["tokens_per_s"] for r in rows], style, label=name)
        b.plot(c, [r["ttft_p99_ms"] for r in rows], style, label=f"{name}: TTFT p99")
        b.plot(c, [r["itl_p99_ms"] for r in rows], style, alpha=0.5, label=f"{name}: ITL p99")
    a.axhline(report["sample_batch1_tok_s"], color="gray", ls=":", label="gpt.sample batch 1")
    a.set(xscale="log", xlabel="concurrent streams", ylabel="output tokens/s", title="throughput")
    b.set(xscale="log", yscale="log", xlabel="concurrent streams", ylabel="ms", title="p99 latency")
    for ax in (a, b):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{Path(report['file']).name} · {report['cpu']} · {report['threads']} threads", fontsize=9)
    fig.tight_layout()
    save(fig, path)
