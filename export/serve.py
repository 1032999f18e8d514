"""Serve the site from `export.web` on loopback: `python -m export.serve site [--port 8000]`.

Python's http.server plus the two cross-origin isolation headers (COOP/COEP) that let onnxruntime-web run
multi-threaded wasm (SharedArrayBuffer); JavaScript modules and wasm get their proper MIME types.
"""

from __future__ import annotations

import argparse
import errno
import functools
from collections.abc import Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gpt.errors import ArgumentParser, GPTError, run_cli

HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cache-Control": "no-cache",  # a rebuilt site is picked up on reload
}


class IsolatedHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".mjs": "text/javascript", ".wasm": "application/wasm"}
    quiet = False

    def end_headers(self) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def make_server(site: Path, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> ThreadingHTTPServer:
    """A server for `site` (port 0: any free port; the bound one is `server.server_address[1]`)."""
    if not (Path(site) / "index.html").is_file():
        raise GPTError(f"{site} has no index.html; build it with `python -m export.web --onnx out/model.onnx "
                       f"--out {site}`")
    handler = type("Handler", (IsolatedHandler,), {"quiet": quiet})
    try:
        return ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(site)))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise GPTError(f"port {port} is in use; choose another with --port") from None
        raise


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m export.serve", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("site", type=Path, nargs="?", default=Path("site"), help="directory to serve (default: site)")
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default: 8000)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise GPTError(f"--port must be in [0, 65535], got {args.port}")
    server = make_server(args.site, port=args.port)
    print(f"serving {args.site} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    run_cli(main)
