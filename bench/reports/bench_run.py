"""The Markdown of a `make bench` run (a pytest-benchmark JSON, read by bench.reports.runs): the machine and how
quiet it was, the targets, decode, prefill, training and the hardware limits measured in the same run. Every
number comes from the JSON (how each is made: `python -m bench.report --help`).
"""

from __future__ import annotations

from bench.harness.plan import BACKEND_LABELS, DECODE_BACKENDS, KV_BASELINE
from bench.reports.markdown import fmt, ratio, table
from bench.reports.runs import Results, baseline, presets_in


def header(r: Results) -> str:
    m, b = r.machine, r.bench
    when = r.data.get("datetime", "")[:16].replace("T", " ")
    load = b.get("loadavg_start"), b.get("loadavg_end")
    quiet = b.get("quiet")
    max_load = max([x["extra_info"].get("loadavg_1m", 0) for x in r.rows] or [0])
    state = ("quiet" if quiet else "UNDER LOAD (other processes were running: timings are noisy)")
    pk = m.get("packages", {})
    lines = [
        f"Run {when} UTC, commit {b.get('commit', '?')[:10]}{' (dirty)' if b.get('dirty') else ''}; "
        f"CPU: {m.get('cpu_model', '?')}, {m.get('logical_cpus', '?')} logical CPUs, "
        f"**{b.get('threads', '?')} threads** for every backend; machine {state}"
        + (f" (1-min load {load[0][0]:.2f} before, {load[1][0]:.2f} at the end, at most {max_load:.2f} after a "
           "benchmark)" if all(load) else "") + ".",
        f"torch {pk.get('torch', '?')}, onnxruntime {pk.get('onnxruntime', '?')}, numpy {pk.get('numpy', '?')}, "
        f"Python {m.get('python_version', '?')}. Random-initialised weights (speed does not depend on them); "
        "medians over the rounds shown.",
    ]
    if b.get("smoke"):
        lines.append("**SMOKE RUN: tiny model, one round; these numbers mean nothing.**")
    return "\n".join(lines)


def hardware_section(r: Results) -> str:
    rows = [[f"{n / 2**20:,.0f} MiB" + (" (DRAM)" if n == r.bw_curve[-1][0] else ""), fmt(bw / 1e9, 1)]
            for n, bw in r.bw_curve]
    out = ["### Hardware limits (measured in this run)", "",
           table(["read (torch.sum, float32)", "GB/s"], rows)]
    if r.peaks:
        out += ["", table(["peak matmul (torch.mm)", "GFLOP/s"],
                          [[f"{dev} {dtype} {n}×{n}", fmt(v / 1e9, 0)] for (dev, dtype), (n, v) in r.peaks.items()])]
    return "\n".join(out)


def decode_section(r: Results) -> str:
    d = r.decode()
    out = ["### Decode throughput (gpt.decode.loop, temperature 0, 64-char prompt)", "",
           "× columns: speed-up over the PyTorch eager baselines of the same preset, batch and length. "
           "Limit = memory-bound tokens/s (weights read once per step for the whole batch + each sequence's KV "
           "cache at the run's average context) at the DRAM bandwidth and at the in-cache bandwidth for that "
           "working set.", ""]
    hdr = ["preset", "batch", "new tokens", "backend", "tokens/s", "× no-cache", "× eager KV",
           "% DRAM limit", "% in-cache limit", "MB/step", "rounds"]
    rows = []
    for key in sorted(d, key=lambda k: (presets_in(r).index(k[0]), k[1], k[2],
                                        DECODE_BACKENDS.index(k[3]) if k[3] in DECODE_BACKENDS else 99)):
        p, batch, n, backend = key
        row = d[key]
        base, mark = baseline(d, p, batch, n)
        kv = d.get((p, batch, n, KV_BASELINE), {}).get("tokens_per_s")
        t = row["tokens_per_s"]
        rows.append([p, str(batch), str(n), BACKEND_LABELS.get(backend, backend), fmt(t, 0),
                     ratio(t, base) + mark, ratio(t, kv),
                     fmt(100 * t / row["limit_dram"], 0, " %") if row.get("limit_dram") else "–",
                     fmt(100 * t / row["limit_cache"], 0, " %") if row.get("limit_cache") else "–",
                     fmt(row["bytes_per_call"] / 1e6, 1), str(row["rounds"])])
    out.append(table(hdr, rows, "lrrlrrrrrrr"))
    if any("†" in row[5] for row in rows):
        out += ["", "† the no-cache baseline ran only the shorter length at this batch (its tokens/s barely depends "
                "on the length once the window slides; `--bench-full-baseline` runs every length)."]
    return "\n".join(out)


def prefill_section(r: Results) -> str:
    rows = []
    peak = r.peak()
    for b in r.by_kind.get("prefill", []):
        e = b["extra_info"]
        s = b["stats"]["median"]
        rows.append([e["preset"], BACKEND_LABELS.get(e["backend"], e["backend"]), str(e["tokens"]),
                     fmt(s * 1e3, 1), fmt(e["tokens"] / s, 0),
                     fmt(100 * e["flops"] / s / peak, 0, " %") if peak else "–", str(b["stats"]["rounds"])])
    return "\n".join(["### Prefill: time to first token for a full block (batch 1)", "",
                      table(["preset", "backend", "prompt tokens", "ms", "tokens/s", "% of fp32 peak", "rounds"],
                            rows, "llrrrrr")])


def train_section(r: Results) -> str:
    rows = []
    trains = r.by_kind.get("train", [])
    peak = r.peak("float32", trains[0]["extra_info"]["device"] if trains else "cpu")
    eager = {b["extra_info"]["preset"]: b["extra_info"]["tokens_per_step"] / b["stats"]["median"]
             for b in trains if b["extra_info"]["variant"] == "eager"}
    for b in trains:
        e = b["extra_info"]
        s = b["stats"]["median"]
        tok_s = e["tokens_per_step"] / s
        rows.append([e["preset"], f"`{e['variant']}`: {e['description']}",
                     f"{e['batch']}×{e['block_size']}", fmt(tok_s, 0), ratio(tok_s, eager.get(e["preset"])),
                     fmt(100 * e["flops_per_step"] / s / peak, 0, " %") if peak else "–",
                     fmt(e.get("first_step_s"), 1), str(b["stats"]["rounds"])])
    device = trains[0]["extra_info"]["device"] if trains else "cpu"
    notes = []
    for b in trains:
        e = b["extra_info"]
        if e.get("extern_fraction"):
            notes.append(f"- {e['preset']}: {100 * e['extern_fraction']:.0f} % of the eager step's ATen op time is "
                         "matmuls + SDPA, which torch.compile leaves to the same ATen kernels on CPU (its C++ GEMM "
                         "template needs frozen weights): compiling can win at most "
                         f"{1 / e['extern_fraction']:.2f}× (Amdahl), even if everything else became free.")
    return "\n".join([f"### Training step ({device}): forward, backward, clip, AdamW", "",
                      table(["preset", "variant", "batch×T", "tokens/s", "× eager", "% of fp32 peak (MFU)",
                             "first step s", "rounds"], rows, "llrrrrrr"), "", *notes])


# The targets, as data: (what, (preset, batch, backend), versus, at least). `versus` is another backend (a ratio
# of tokens/s at the same preset, batch and length), "no-cache" (the eager no-cache baseline), "limit" (a fraction
# of the in-cache memory-bound limit), "batch 1" (this backend at batch 1) or None (absolute tokens/s).
DECODE_TARGETS = [
    ("ORT fp32 ≥ 2.5× the PyTorch KV-cache decoder", ("shakespeare", 1, "ort-fp32"), "eager-kv", 2.5),
    ("ORT fp32 ≥ 25× the no-cache loop", ("shakespeare", 1, "ort-fp32"), "no-cache", 25),
    ("ORT fp32 ≥ 90 % of the bandwidth limit for its working set", ("shakespeare", 1, "ort-fp32"), "limit", 0.9),
    ("ORT int8 ≥ 5× the PyTorch KV-cache decoder", ("shakespeare", 1, "ort-int8"), "eager-kv", 5),
    ("ORT int4 ≥ 5× the PyTorch KV-cache decoder", ("shakespeare", 1, "ort-int4"), "eager-kv", 5),
    ("ORT fp32 ≥ 5,000 tokens/s", ("cpu", 1, "ort-fp32"), None, 5000),
    ("ORT int4 ≥ 4× ORT fp32", ("large", 1, "ort-int4"), "ort-fp32", 4),
    ("ORT fp32 batch 8 ≥ 5× batch 1", ("shakespeare", 8, "ort-fp32"), "batch 1", 5),
    ("ORT fp32 not slower than onnxruntime-genai's own loop", ("shakespeare", 1, "ort-fp32"), "genai-loop", 1.0),
    ("ORT fp32 not slower than onnxruntime-genai's own loop", ("cpu", 1, "ort-fp32"), "genai-loop", 1.0),
    ("torch.compile KV decoder ≥ 1.5× eager KV", ("cpu", 1, "compiled-kv"), "eager-kv", 1.5),
    ("torch.compile KV decoder ≥ 1.5× eager KV", ("shakespeare", 1, "compiled-kv"), "eager-kv", 1.5),
]
NEW_TOKENS_FOR_TARGETS = 500


def decode_target(d: dict, key: tuple, versus: str | None, n: int) -> float | None:
    preset, batch, backend = key
    row = d.get((preset, batch, n, backend))
    if not row:
        return None
    got = row["tokens_per_s"]
    if versus is None:
        return got
    if versus == "limit":
        return got / row["limit_cache"] if row.get("limit_cache") else None
    if versus == "no-cache":
        base = baseline(d, preset, batch, n)[0]
    elif versus == "batch 1":
        base = d.get((preset, 1, n, backend), {}).get("tokens_per_s")
    else:
        base = d.get((preset, batch, n, versus), {}).get("tokens_per_s")
    return got / base if base else None


def targets_section(r: Results) -> str:
    d = r.decode()
    n = NEW_TOKENS_FOR_TARGETS
    rows = []

    def add(what: str, got: float | None, target: float, absolute: bool = False) -> None:
        shown = "not run" if got is None else (fmt(got, 0, " tok/s") if absolute else
                                                 f"{100 * got:.0f} %" if target < 1 else f"{got:.2f}×")
        rows.append([what, shown, "–" if got is None else ("yes" if got >= target else "**no**")])

    for what, key, versus, target in DECODE_TARGETS:
        add(f"{what} ({key[0]}, batch {key[1]}, +{n})", decode_target(d, key, versus, n), target, versus is None)
    for preset in presets_in(r):
        tr = {b["extra_info"]["variant"]: b["extra_info"]["tokens_per_step"] / b["stats"]["median"]
              for b in r.by_kind.get("train", []) if b["extra_info"]["preset"] == preset}
        comp = {k: v for k, v in tr.items() if k.startswith("compile")}
        if "eager" in tr and comp:
            best = max(comp, key=comp.get)
            add(f"best compiled train step ≥ 1.3× eager ({preset}: `{best}`)", comp[best] / tr["eager"], 1.3)
    return "\n".join(["### Targets", "", table(["target", "measured", "met"], rows, "lrl")])


def sections(r: Results) -> list[str]:
    """The run's sections, each headed `### ...`: targets, decode, prefill, training (when it ran), hardware."""
    parts = [targets_section(r), decode_section(r), prefill_section(r)]
    if r.by_kind.get("train"):
        parts.append(train_section(r))
    return [*parts, hardware_section(r)]


def markdown(r: Results) -> str:
    """What `python -m bench.report` writes: a title, the header, the sections."""
    return "\n\n".join([f"## Benchmarks: {r.path.name}", header(r), *sections(r)]) + "\n"
