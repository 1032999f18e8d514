"""The cluster benchmark's report (bench.cluster writes it, bench.reports.tables shows it): one row per server at
the same load, the Ray proxy's CPU fitted per request and per chunk, its added hop, and the chart of throughput
per configuration beside the proxy's CPU."""

from __future__ import annotations

from pathlib import Path

from bench.harness.plan import SERVING_TEMPERATURE
from bench.reports.chart import pyplot, save
from gpt.serve.options import RAY_STREAM_INTERVAL


def proxy_seconds(report: dict) -> tuple[float, float]:
    """The proxy's CPU seconds (per request, per chunk), fitted to the last two rows: the same requests, fewer and
    more chunks."""
    a, b = report["rows"][-2:]
    per_chunk = (b["proxy_cpu_s"] - a["proxy_cpu_s"]) / max(b["chunks"] - a["chunks"], 1)
    return (a["proxy_cpu_s"] - per_chunk * a["chunks"]) / a["requests"], per_chunk


def proxy_fit(report: dict) -> dict:
    """The fit as the result file records it (`proxy_fit`)."""
    per_request, per_chunk = proxy_seconds(report)
    return {"cpu_ms_per_request": 1e3 * per_request, "cpu_us_per_chunk": 1e6 * per_chunk}


def markdown(report: dict) -> str:
    base = report["rows"][0]["tokens_per_s"]
    lines = [f"{report['file']} · {report['cpu']} ({report['cores']} cores) · {report['streams']} streams · "
             f"{report['slots']} slots per engine · prompt {report['prompt_len']} + {report['max_tokens']} new "
             f"tokens, T={SERVING_TEMPERATURE}", "",
             "| server | requests ok / failed | tok/s | × gpt.serve | TTFT p50 / p99 ms | ITL p50 / p99 ms | "
             "chunks | proxy CPU s | proxy CPU per request / per chunk |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        proxy = "| | | |"
        if "proxy_cpu_s" in r:
            proxy = (f"| {r['chunks']:,} | {r['proxy_cpu_s']:.2f} | {1e3 * r['proxy_cpu_s'] / r['requests']:.1f} ms / "
                     f"{1e6 * r['proxy_cpu_s'] / max(r['chunks'], 1):.0f} us |")
        lines.append(f"| {r['server']} | {r['completed']} / {r['failed']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['tokens_per_s'] / base:.2f} | {r['ttft_p50_ms']:.1f} / {r['ttft_p99_ms']:.1f} | "
                     f"{r['itl_p50_ms']:.2f} / {r['itl_p99_ms']:.2f} {proxy}")
    a, b = report["rows"][-2:]
    per_request, per_chunk = proxy_seconds(report)
    lines += ["", f"The proxy's CPU, fitted to the last two rows (same requests, {a['chunks']:,} vs {b['chunks']:,} "
              f"chunks): {1e3 * per_request:.1f} ms a request + {1e6 * per_chunk:.0f} us a chunk; one proxy core "
              f"carries about {1 / max(per_request + per_chunk * a['chunks'] / a['requests'], 1e-9):,.0f} requests/s "
              f"like these at --stream-interval {RAY_STREAM_INTERVAL:g}."]
    h = report["hop"]
    lines += ["", f"The proxy's hop: a 1-token request takes {h['ray_1_token_ms']:.2f} ms through Ray (1 replica) vs "
              f"{h['direct_1_token_ms']:.2f} ms from gpt.serve (median of sequential requests): "
              f"+{h['hop_ms']:.2f} ms a request."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    """Throughput per configuration beside the proxy's CPU: where a cluster's tokens go on one machine."""
    rows = report["rows"]
    names = [r["server"].replace(", --stream-interval", "\n--stream-interval").replace(", 1 process", "\n1 process")
             for r in rows]
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    bars = a.barh(names, [r["tokens_per_s"] for r in rows], color=["#4c72b0"] + ["#dd8452"] * (len(rows) - 1))
    for bar, r in zip(bars, rows, strict=True):
        a.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {r['tokens_per_s']:,.0f} tok/s, TTFT p99 "
               f"{r['ttft_p99_ms']:.0f} ms", va="center", fontsize=7)
    a.invert_yaxis()
    top = max(r["tokens_per_s"] for r in rows)
    a.set(xlabel="output tokens/s", title=f"{report['streams']} streams", xlim=(0, 1.6 * top))
    ray = [r for r in rows if "proxy_cpu_s" in r]
    labels = [r["server"].removeprefix("ray, ").replace(" x 1 thread, --stream-interval ", "\ninterval ")
              + f"\n{r['chunks']:,} chunks" for r in ray]
    b.bar(labels, [1e3 * r["proxy_cpu_s"] / r["requests"] for r in ray], color="#c44e52")
    fit = proxy_fit(report)
    b.set(ylabel="proxy CPU ms per request", title=f"Ray's proxy CPU: {fit['cpu_ms_per_request']:.1f} ms a request\n"
          f"+ {fit['cpu_us_per_chunk']:.0f} us a chunk")
    b.tick_params(axis="x", labelsize=7)
    for ax in (a, b):
        ax.grid(alpha=0.3, axis="x" if ax is a else "y")
    fig.suptitle(f"{Path(report['file']).name} · {report['cpu']} ({report['cores']} cores) · prompt "
                 f"{report['prompt_len']} + {report['max_tokens']} tokens", fontsize=9)
    fig.tight_layout()
    save(fig, path)
