"""Write a static site that samples an exported model in the browser: `python -m export.web --onnx out/model.onnx`.

    python -m export.web --onnx out/model.onnx [--out site]     # write the site
    python -m export.web --onnx out/model.onnx --serve          # write it, then serve it on 127.0.0.1:8080
    python -m export.web --out site --serve --no-build          # serve a site written before, as it is

Any static host serves the site too (the docs' web page says which headers it should send).

With `OUT.explain.onnx` beside the file (`python -m export.onnx --ckpt out --attention onnx --explain`), the site
is written with it as `explain.onnx` and the page gets its explorer: for any character, its attention in every
head and layer, one head's q·k/√d, mask, softmax and weighted sum of v, the next-character distribution under
temperature / top-k / top-p, and the logit lens, live while the model writes (the docs' web page).

The site is `index.html`, our `gpt.js`, `explain.js` and `explorer.js`, the model as `model.onnx`, and
onnxruntime-web's wasm runtime (the version pinned in web/package.json, fetched by `npm ci` into web/node_modules
on first use, never committed). The file is checked as the page will run it: opened by onnxruntime first
(loadable, with our metadata, as `gpt.sample` reads it), then, once the site is written, by onnxruntime-web's
wasm backend under Node (a prefill and a decode step through the site's own gpt.js; the explain graph's logits
must equal the model's). Both layouts run there; `onnx` is the faster one in a browser (see the docs' web page).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from export.explain import explain_path
from export.static_server import check_port, serve
from gpt.decode.backends.ort_session import open_session
from gpt.errors import ArgumentParser, GPTError, run_cli

WEB = Path(__file__).resolve().parents[1] / "web"
PACKAGE = "onnxruntime-web"
PAGE_FILES = ("index.html", "gpt.js", "explain.js", "explorer.js")
EXPLAIN = "explain.onnx"  # the explorer's graph in the site; the page runs without it
RUNTIME_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
REEXPORT = "re-export it with `python -m export.onnx --ckpt out --attention onnx`"


def pinned_version() -> str:
    return json.loads((WEB / "package.json").read_text())["dependencies"][PACKAGE]


def run_tool(args: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
    """Run npm or node in web/; a missing tool or a failure is one line."""
    try:
        return subprocess.run(args, cwd=WEB, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise GPTError(f"{args[0]} is not installed; {what} needs Node.js and npm (Debian: "
                       "`apt-get install nodejs npm`)") from None
    except subprocess.TimeoutExpired:
        raise GPTError(f"{what} took more than {timeout:.0f} s (`{' '.join(args)}` in {WEB})") from None


def runtime_dir() -> Path:
    """onnxruntime-web's dist/ folder at the pinned version, installed by `npm ci` when absent or stale."""
    version = pinned_version()
    package = WEB / "node_modules" / PACKAGE
    installed = json.loads((package / "package.json").read_text())["version"] if package.is_dir() else None
    if installed != version:
        r = run_tool(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], f"fetching {PACKAGE} {version}",
                     timeout=600)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise GPTError(f"`npm ci` in {WEB} could not fetch {PACKAGE} {version}: {last}")
    return package / "dist"


def check_on_wasm(site: Path, onnx: Path) -> str:
    """The layout (`onnx explain` with the explorer's graph), once onnxruntime-web's wasm backend has run a prefill
    and a step of the site's model, and the explain graph on the same text."""
    r = run_tool(["node", "check.mjs", str(site.resolve())], "checking the model on onnxruntime-web", timeout=300)
    if r.returncode != 0 or not r.stdout.startswith("ok "):
        reason = " ".join((r.stdout + r.stderr).split())[:300] or f"node exited with status {r.returncode}"
        raise GPTError(f"{onnx} cannot run on {PACKAGE} {pinned_version()} (wasm): {reason}; {REEXPORT}")
    return " ".join(r.stdout.split()[1:])


def build_site(onnx: Path, out: Path) -> str:
    """Write the site into `out` (with the explain graph beside `onnx`, if there is one) and check its model on
    wasm; returns what check_on_wasm says."""
    if out.exists() and not out.is_dir():
        raise GPTError(f"--out {out} exists and is not a directory")
    open_session(onnx, threads=1)  # loadable, and our metadata: the messages gpt.sample gives
    dist = runtime_dir()
    out.mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(WEB / name, out / name)
    for name in RUNTIME_FILES:
        shutil.copyfile(dist / name, out / name)
    shutil.copyfile(onnx, out / "model.onnx")
    explain = explain_path(onnx)
    if explain.is_file():
        shutil.copyfile(explain, out / EXPLAIN)
    else:
        (out / EXPLAIN).unlink(missing_ok=True)  # a site written before from another file
    return check_on_wasm(out, onnx)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m export.web", description=__doc__)
    p.add_argument("--onnx", type=Path, default=Path("out/model.onnx"), help="exported model (default: out/model.onnx)")
    p.add_argument("--out", type=Path, default=Path("site"), help="directory to write (default: site)")
    p.add_argument("--serve", action="store_true", help="then serve it on 127.0.0.1 with the COOP/COEP headers "
                   "multi-threaded wasm needs, until Ctrl-C")
    p.add_argument("--port", type=int, default=8080,
                   help="port for --serve (default: 8080, beside gpt.serve's 8000; 0: any free one)")
    p.add_argument("--no-build", action="store_true", help="with --serve: serve --out as it is, without writing it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_build and not args.serve:
        raise GPTError("--no-build only makes sense with --serve")
    check_port(args.port)
    if not args.no_build:
        write(args.onnx, args.out, args.serve)
    if args.serve:
        serve(args.out, args.port)
    return 0


def write(onnx: Path, out: Path, serving: bool) -> None:
    layout, *explain = build_site(onnx, out).split()
    size = sum((out / n).stat().st_size for n in RUNTIME_FILES) / 1e6
    print(f"wrote {out}/: {', '.join(PAGE_FILES)}, model.onnx ({layout} layout, "
          f"{(out / 'model.onnx').stat().st_size / 1e6:.1f} MB), {PACKAGE} {pinned_version()} ({size:.1f} MB)")
    if explain:
        print(f"explorer: {EXPLAIN} ({(out / EXPLAIN).stat().st_size / 1e6:.1f} MB, from {explain_path(onnx)})")
    else:
        print(f"no explorer: {explain_path(onnx)} is missing; `python -m export.onnx --ckpt out --attention onnx "
              f"--explain --out {onnx}` writes it")
    if layout == "gqa":
        print("note: the gqa layout runs on wasm at about half the tokens/s of the onnx layout (wasm copies every "
              "input and output, so its in-place cache buys nothing there); `python -m export.onnx --ckpt out "
              "--attention onnx --out out/web.onnx` writes the faster one")
    if not serving:
        print(f"serve it: python -m export.web --out {out} --serve --no-build")


if __name__ == "__main__":
    run_cli(main)
