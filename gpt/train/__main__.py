"""`python -m gpt.train`: the CLI of the training loop (gpt/train/loop.py)."""

from gpt.errors import run_cli
from gpt.train.loop import main

run_cli(main)
