"""Decoding (torch-free): from a prompt to text, on any backend.

loop.py is the generation loop and the window policy past block_size; sampler.py the one sampler (temperature,
top-k, top-p) for every backend and the engine; backends/ one decoder per runtime behind `prefill` / `step` (only
backends/torch_decoder.py imports torch, when chosen); onnx_format.py the ONNX file's contract; speculative/
drafts characters and verifies them in one run of the model. The Python API over all of it is gpt/api.py.
"""
