"""Speculative decoding (torch-free): the same text, several characters per run of the model.

loop.py is the accept rule and the loop over a verifying decoder; drafters.py opens a drafter by name; ngram.py
drafts from the training text's suffix array; draft_model.py from a smaller gqa file.
"""
