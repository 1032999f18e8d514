"""The web page's static server (`python -m export.web --serve`): Python's http.server on loopback plus the two
cross-origin isolation headers (COOP/COEP) that let onnxruntime-web run multi-threaded wasm
(SharedArrayBuffer); JavaScript modules and wasm get their proper MIME types.
"""

from __future__ import annotations

import errno
import functools
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gpt.errors import GPTError

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


def check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise GPTError(f"--port must be in [0, 65535], got {port}")


def make_server(site: Path, host: str = "127.0.0.1", port: int = 8080, quiet: bool = False) -> ThreadingHTTPServer:
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


def serve(site: Path, port: int) -> None:
    """Serve `site` on 127.0.0.1:`port` until Ctrl-C."""
    server = make_server(site, port=port)
    print(f"serving {site} at http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
