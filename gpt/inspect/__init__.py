"""Watch the model think: attention maps, the character-embedding map, predictions layer by layer and the
residual stream, for one prompt (`python -m gpt.inspect`).

capture.py records the internals with forward hooks, analysis.py turns them into numbers, figures.py and
page.py draw them, report.py puts it together, __main__.py is the CLI.
"""
