"""The walkthrough's set-up in one call, and `python -m docsgen.walkthrough` (`make walkthrough`), which executes
docs/walkthrough.ipynb in place so GitHub shows its outputs.

`setup()` hands the notebook a trained model: `out/`'s if `make demo` wrote one, otherwise a tiny one it trains
in under a minute (one thread, fixed iterations, so the same numbers on every run of one machine) and
keeps in .cache/ for the next run. The committed copy is always executed on the tiny model, and it records a
digest of its cells' sources: tests/test_docs.py checks that the outputs were made from the cells as they are.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpt.errors import ArgumentParser, GPTError, run_cli

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "docs" / "walkthrough.ipynb"
TINY = os.environ.get("WALKTHROUGH_TINY") == "1"  # `make walkthrough`: the tiny model even where out/ has one
TINY_TRAIN = ["--preset", "cpu", "--n_layer", "2", "--n_head", "4", "--n_embd", "64", "--block_size", "64",
              "--batch_size", "32", "--max_iters", "400", "--eval_interval", "50", "--eval_iters", "5",
              "--dtype", "float32", "--no-progress"]
DIGEST_KEY = "walkthrough_sources_sha256"


@dataclass
class Lesson:
    """What the walkthrough works on."""

    model: object  # gpt.model.GPT, in eval mode
    tokenizer: object  # gpt.tokenizer.CharTokenizer
    ckpt: Path
    text: str  # Tiny Shakespeare, all of it
    log: list[dict]  # the training log (log.jsonl): iteration, train and val loss at each evaluation
    val_loss: float  # the final full-pass val loss
    work: Path  # a folder for the figures and the export, removed when the kernel exits


def _tiny_model() -> Path:
    """The tiny model, trained once per set of options (the folder's name is their digest)."""
    ckpt = ROOT / ".cache" / f"walkthrough-{hashlib.sha256(' '.join(TINY_TRAIN).encode()).hexdigest()[:10]}"
    if not (ckpt / "model.safetensors").is_file():
        command = [sys.executable, "-m", "gpt.train", "--out-dir", str(ckpt), *TINY_TRAIN]
        # one thread: a model this small gains nothing from more, and the result is the same on every run
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        if run.returncode:
            raise GPTError(f"training the walkthrough's model failed:\n{run.stderr[-2000:]}")
    return ckpt


def setup() -> Lesson:
    """The model, its tokenizer and training log, and the text, for the walkthrough (run from the repository's
    root: the package finds data/ and out/ from there)."""
    from gpt.data import load_shakespeare
    from gpt.model.checkpoint import load_checkpoint
    from gpt.train.log import LOG, read_log

    os.chdir(ROOT)
    demo = ROOT / "out"
    ckpt = demo if (demo / "model.safetensors").is_file() and not TINY else _tiny_model()
    model, tokenizer, manifest = load_checkpoint(ckpt)
    model.eval()
    work = Path(tempfile.mkdtemp(prefix="gpt-walkthrough-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    return Lesson(model, tokenizer, ckpt, load_shakespeare(ROOT / "data"), read_log(ckpt / LOG),
                  float(manifest.get("val_loss", float("nan"))), work)


def digest(notebook: dict) -> str:
    """The sha256 of the code cells' sources, in order: what the outputs were made from."""
    sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def execute(path: Path = NOTEBOOK) -> float:
    """Run every cell of `path` on the tiny model, in its folder, and write it back with its outputs and digest."""
    import nbformat
    from nbclient import NotebookClient

    os.environ["WALKTHROUGH_TINY"] = "1"
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
                   ).execute()
    notebook.metadata[DIGEST_KEY] = digest(notebook)
    nbformat.write(notebook, path)
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m docsgen.walkthrough", description=__doc__)
    p.add_argument("notebook", nargs="?", type=Path, default=None, help="default: docs/walkthrough.ipynb")
    args = p.parse_args(argv)
    notebook = args.notebook or NOTEBOOK  # not the parser's default: the reference would show this checkout's path
    print(f"executed {notebook} in {execute(notebook):.0f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
