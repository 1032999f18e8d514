"""Continuous batching on the gqa file: many requests, one decode step (see `gpt.engine.core`). Torch-free.

    from gpt.engine import Engine, GenerationParams
    with Engine("out/model.onnx", slots=16) as engine:
        texts = engine.generate(["ROMEO:", "JULIET:"], GenerationParams(max_tokens=200, temperature=0))
"""

from gpt.engine.core import DEFAULT_MAX_QUEUE, DEFAULT_SLOTS, Engine, EngineClosed
from gpt.engine.request import Event, GenerationParams, Request, RequestFailed, Tally, drain
from gpt.engine.scheduler import QueueFull

__all__ = ["DEFAULT_MAX_QUEUE", "DEFAULT_SLOTS", "Engine", "EngineClosed", "Event", "GenerationParams", "QueueFull",
           "Request", "RequestFailed", "Tally", "drain"]
