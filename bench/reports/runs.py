"""A pytest-benchmark run's JSON (`make bench`), read into what the report and the chart need: rows by kind,
the measured bandwidth curve and matmul peaks, and the decode figures with their memory-bound limits."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.harness.limits import memory_bound_tokens_per_s
from bench.harness.plan import BASELINE


class Results:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text())
        self.machine = self.data.get("machine_info", {})
        self.bench = self.data.get("bench", {})
        self.rows = [b for b in self.data.get("benchmarks", []) if b.get("stats")]
        by_kind: dict[str, list[dict]] = {}
        for b in self.rows:
            by_kind.setdefault(b.get("extra_info", {}).get("kind", ""), []).append(b)
        self.by_kind = by_kind
        curve = sorted((b["extra_info"]["bytes"], b["extra_info"]["bytes"] / b["stats"]["median"])
                       for b in by_kind.get("read_bandwidth", []))
        self.bw_curve = curve  # (bytes, bytes/s), ascending size
        self.dram_bw = curve[-1][1] if curve else None
        self.peaks = {(b["extra_info"].get("device", "cpu"), b["extra_info"]["dtype"]):
                      (b["extra_info"]["n"], b["extra_info"]["flops"] / b["stats"]["median"])
                      for b in by_kind.get("matmul_peak", [])}

    def peak(self, dtype: str = "float32", device: str = "cpu") -> float | None:
        return self.peaks.get((device, dtype), (None, None))[1]

    def bandwidth_at(self, nbytes: float) -> float | None:
        """Read bandwidth for a working set of `nbytes`, log-log interpolated on the measured curve."""
        c = self.bw_curve
        if not c:
            return None
        if nbytes <= c[0][0]:
            return c[0][1]
        for (x0, y0), (x1, y1) in zip(c, c[1:], strict=False):
            if nbytes <= x1:
                t = (math.log(nbytes) - math.log(x0)) / (math.log(x1) - math.log(x0))
                return math.exp(math.log(y0) + t * (math.log(y1) - math.log(y0)))
        return c[-1][1]

    def decode(self) -> dict[tuple, dict]:
        out = {}
        for b in self.by_kind.get("decode", []):
            e = b["extra_info"]
            tok_s = e["batch"] * e["new_tokens"] / b["stats"]["median"]
            row = {**e, "tokens_per_s": tok_s, "rounds": b["stats"]["rounds"], "median_s": b["stats"]["median"]}
            if self.dram_bw:
                row["limit_dram"] = memory_bound_tokens_per_s(e["bytes_per_call"], e["batch"], self.dram_bw)
                row["limit_cache"] = memory_bound_tokens_per_s(
                    e["bytes_per_call"], e["batch"], self.bandwidth_at(e["bytes_per_call"]))
            out[(e["preset"], e["batch"], e["new_tokens"], e["backend"])] = row
        return out


def presets_in(r: Results) -> list[str]:
    seen = []
    for b in r.rows:
        p = b["extra_info"].get("preset")
        if p and p not in seen:
            seen.append(p)
    return seen


def baseline(d: dict, preset: str, batch: int, n: int) -> tuple[float | None, str]:
    """The no-cache tokens/s for this preset, batch and length, else at the nearest length measured (marked †)."""
    row = d.get((preset, batch, n, BASELINE))
    if row:
        return row["tokens_per_s"], ""
    others = sorted((abs(k[2] - n), k[2]) for k in d if k[:2] == (preset, batch) and k[3] == BASELINE)
    if not others:
        return None, ""
    return d[(preset, batch, others[0][1], BASELINE)]["tokens_per_s"], "†"
