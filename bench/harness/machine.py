"""The machine a benchmark runs on, as its results record it: the CPU's model name, this checkout's commit and
the versions of the packages that set the speed. Torch-free."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout: the commands run from here


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def this_machine() -> str:
    """'2-core AMD EPYC': the logical CPUs and the CPU's model name, as lscpu and /proc/cpuinfo give them."""
    return f"{os.cpu_count()}-core {cpu_model()}"


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnxruntime", "onnx", "onnxscript", "numpy", "pytest-benchmark"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
