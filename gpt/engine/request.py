"""What a caller hands the engine and what it hands back: parameters, events, the request handle, and the
stop-string rule for text that streams out one character at a time. Torch-free, no numpy."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpt.decode.loop import MAX_NEW_TOKENS
from gpt.decode.sampler import SamplingParams
from gpt.errors import GPTError

MAX_STOP = 4  # OpenAI's limit on stop strings


@dataclass(frozen=True)
class GenerationParams:
    """One request's settings. Validated here and nowhere else (the server's 400s come from these errors)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random seed
    stop: tuple[str, ...] = ()
    timeout: float | None = None  # seconds from submission; None: no deadline
    draft_tokens: int | None = None  # speculative decoding: drafts per verify run; None: the engine's; 0: off

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_NEW_TOKENS:
            raise GPTError(f"max_tokens must be in [1, {MAX_NEW_TOKENS:,}], got {self.max_tokens}")
        if len(self.stop) > MAX_STOP or any(not isinstance(s, str) or not s for s in self.stop):
            raise GPTError(f"stop must be at most {MAX_STOP} non-empty strings, got {list(self.stop)!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise GPTError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.draft_tokens is not None and self.draft_tokens < 0:
            raise GPTError(f"draft_tokens must be >= 0 (0 = no speculation), got {self.draft_tokens}")
        SamplingParams(self.temperature, self.top_k, self.top_p)  # the sampler's own checks of these three

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_k, self.top_p, seed)


@dataclass(frozen=True)
class Event:
    """`token` (new text; held-back stop-string prefixes come later or never), then one `done` (finish_reason
    `length`, `stop` or `cancelled`) or one `error` (code `timeout`, `shutdown` or `internal`)."""

    kind: str
    text: str = ""
    finish_reason: str | None = None
    error: str | None = None
    code: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """A submitted request: `cancel()` frees its slot within one engine step."""

    prompt_ids: list[int]
    params: GenerationParams
    sink: Callable[[Event], None]
    prompt_tokens: int  # the prompt's length before the window kept its tail
    id: int = field(default_factory=lambda: next(_ids))
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    finished: bool = False
    notify: Callable[[], None] | None = None  # the engine's wake-up, so a cancel is seen at once

    @property
    def deadline(self) -> float | None:
        return None if self.params.timeout is None else self.submitted + self.params.timeout

    def over(self, now: float) -> bool:
        """Cancelled, or past its deadline: the engine ends it (in the queue or in its slot)."""
        return self.cancelled or (self.deadline is not None and now > self.deadline)

    def cancel(self) -> None:
        self.cancelled = True
        if self.notify is not None:
            self.notify()


class StopText:
    """Text that streams out per character, cut before the first stop string. Characters that could still
    begin a stop string are held back until they cannot (or the request ends)."""

    def __init__(self, stop: tuple[str, ...]):
        self.stop, self.pending = stop, ""

    def push(self, ch: str) -> tuple[str, bool]:
        """(text that is now safe to send, whether a stop string just completed)."""
        self.pending += ch
        hits = [len(self.pending) - len(s) for s in self.stop if self.pending.endswith(s)]
        if hits:
            out, self.pending = self.pending[:min(hits)], ""
            return out, True
        hold = max((k for s in self.stop for k in range(1, min(len(s), len(self.pending) + 1))
                    if s.startswith(self.pending[-k:])), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out
