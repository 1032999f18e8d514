"""bench.step_cost's report (the command writes it, bench.reports.tables shows it): one column per model, a row per
op type of onnxruntime's nodes, then the rest of our step part by part, its total, and beside it bench.step's
uninstrumented step, onnxruntime-genai's loop and the step's bandwidth and compute limits."""

from __future__ import annotations

from bench.reports.markdown import fmt, table

# The step's parts after its nodes, in the order they are shown; with the nodes, they add up to "total".
PARTS = ("run outside nodes", "binding and output", "sampler", "loop Python", "total")
LABELS = {"run outside nodes": "onnxruntime's run call outside its nodes",
          "binding and output": "binding and output (SlotRunner around the run)",
          "sampler": "sampler's Python (`sample_tokens`; with the graph's head, the draw)",
          "loop Python": "the loop's Python", "total": "**total**"}


def markdown(report: dict) -> str:
    return "\n".join([f"# A decode step, itemised: {report['machine']}, {report['date']}", "",
                      f"`{report['command']}`", "", tables(report)])


def share(us: float, total: float) -> str:
    return f"{fmt(us, 1)} ({100 * us / total:.0f} %)"


def rows(models: list[dict]) -> list[list[str]]:
    """The itemised rows: every op type seen in any model (by its time in the first that has it), then PARTS."""
    ops = sorted({op for m in models for op in m["nodes"]},  # ties by name: a set's order changes run to run
                 key=lambda op: (-next(m["nodes"][op] for m in models if op in m["nodes"]), op))
    out = [[f"node: {op}", *(share(m["nodes"][op], m["parts"]["total"]) if op in m["nodes"] else "–"
                             for m in models)] for op in ops]
    for part in PARTS[:-1]:
        out.append([LABELS[part], *(share(m["parts"][part], m["parts"]["total"]) for m in models)])
    out.append([LABELS["total"], *(f"**{fmt(m['parts']['total'], 1)}**" for m in models)])
    return out


TARGET = 1.0  # issue 38: ours ÷ genai's loop per step, every shape (then 1.2)


def verdict(model: dict) -> str:
    ratio = model["genai_us"] / model["uninstrumented_us"]
    return "met" if ratio >= TARGET else f"missed by {TARGET - ratio:.2f}"


def beside(models: list[dict]) -> list[list[str]]:
    """bench.step's step, genai's loop and the limits, each with what it is made of."""
    before = [["the same step with the numpy sampler on its logits (÷ ours uninstrumented)",
               *(f"{fmt(m['numpy_sampler_us'], 1)} ({m['numpy_sampler_us'] / m['uninstrumented_us']:.2f}×)"
                 for m in models)]] if all("numpy_sampler_us" in m for m in models) else []
    return [
        ["the same step uninstrumented (bench.step's loop)", *(fmt(m["uninstrumented_us"], 1) for m in models)],
        *before,
        ["onnxruntime-genai's loop, same file (÷ ours uninstrumented)",
         *(f"{fmt(m['genai_us'], 1)} ({m['genai_us'] / m['uninstrumented_us']:.2f}×)" for m in models)],
        [f"target: ours at least as fast as genai's loop ({TARGET:.1f}×)", *(verdict(m) for m in models)],
        ["bandwidth limit at the DRAM copy rate",
         *(f"{fmt(m['dram_limit_us'], 2)} ({m['bytes_per_step'] / 1e6:.2f} MB)" for m in models)],
        ["bandwidth limit at the working set's copy rate",
         *(f"{fmt(m['cache_limit_us'], 2)} ({m['cache_gb_s']:.0f} GB/s)" for m in models)],
        ["compute limit at onnxruntime's MatMul rate",
         *(f"{fmt(m['compute_limit_us'], 2)} ({m['flops_per_step'] / 1e6:.2f} MFLOP)" for m in models)],
    ]


def tables(report: dict) -> str:
    """The report as one Markdown table, a column per model, and the notes a reader needs to weigh its rows."""
    models = report["models"]
    header = ["µs per step, batch 1", *(f"`{m['name']}` ({m['n_layer']} × {m['n_head']} × {m['n_embd']}, block "
                                        f"{m['block_size']})" for m in models)]
    notes = [f"{report['threads']} onnxruntime thread(s); mean over contexts 2 .. block_size - 1, the median of "
             f"{report['rounds']} interleaved rounds; DRAM copy rate {report['dram_gb_s']:.1f} GB/s "
             f"({report['copy_mib']} MiB numpy copy, bytes read + written), MatMul {report['matmul_gflop_s']:.0f} "
             "GFLOP/s. Node rows: onnxruntime's profiler's durations less its own bookkeeping inside them (the mean "
             "duration of the graph's trivial nodes, shape arithmetic, taken off every node; the trivial nodes are "
             "left to the run's remainder)."]
    notes += [f"`{m['name']}`: the profiler made the run call {fmt(m['profiler_overhead_us'], 1)} µs a step slower; "
              f"{m['nodes_per_step']:.0f} nodes a step ({m['trivial_nodes_per_step']:.0f} trivial), "
              f"{m['bookkeeping_us']:.2f} µs of bookkeeping taken off each; the trace's own sum for the rows' nodes "
              f"{fmt(sum(m['nodes_raw'].values()), 1)} µs." for m in models]
    return table(header, rows(models) + beside(models)) + "\n\n" + " ".join(notes) + "\n"
