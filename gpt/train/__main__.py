"""`python -m gpt.train`: the CLI of the training loop (gpt/train/loop.py)."""

from gpt.errors import run_cli
from gpt.train.loop import main

__all__ = ["main"]

if __name__ == "__main__":
    run_cli(main)
