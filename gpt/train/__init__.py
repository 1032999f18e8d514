"""Training (torch): `python -m gpt.train`.

loop.py reads top to bottom like nanoGPT's train.py; what it uses, one concern a module:
options.py (the CLI and the resolved Options), state.py (train_state.pt for --resume), budget.py (--time-budget: a
deadline re-planned from the recent pace), schedule.py (the learning rate), optim.py and muon.py (AdamW, Muon),
ema.py, precision.py (--dtype auto), losses.py (val loss), log.py (log.jsonl, loss.png), distributed.py (torchrun).
"""
