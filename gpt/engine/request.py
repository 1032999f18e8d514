"""What a caller hands the engine and what it hands back: parameters, events, the request handle, the one
reading of a request's events (`Tally`, `drain`), and the stop-string rule for text that streams out one character
at a time. Torch-free, no numpy."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gpt.decode.loop import MAX_NEW_TOKENS
from gpt.decode.sampler import SamplingParams
from gpt.errors import GPTError

MAX_STOP = 4  # OpenAI's limit on stop strings


@dataclass(frozen=True)
class GenerationParams:
    """One request's settings, checked here as far as they can be on their own (the server's 400s come from these
    errors): max_tokens, stop and timeout by this class; temperature, top_k and top_p by `SamplingParams`, made
    once here and kept as `sampling`. `draft_tokens` is bounded by the model's block_size, which only the engine
    knows: `Engine.submit` checks it (`gpt.decode.speculative.loop.check_draft_tokens`, 0 = off)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None  # None: a fresh random seed
    stop: tuple[str, ...] = ()
    timeout: float | None = None  # seconds from submission; None: no deadline
    draft_tokens: int | None = None  # speculative decoding: drafts per verify run; None: the engine's; 0: off
    # the sampler's parameters; with seed None its seed is a stand-in that the engine replaces, per request
    sampling: SamplingParams = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_NEW_TOKENS:
            raise GPTError(f"max_tokens must be in [1, {MAX_NEW_TOKENS:,}], got {self.max_tokens}")
        if len(self.stop) > MAX_STOP or any(not isinstance(s, str) or not s for s in self.stop):
            raise GPTError(f"stop must be at most {MAX_STOP} non-empty strings, got {list(self.stop)!r}")
        if self.timeout is not None and not self.timeout > 0:
            raise GPTError(f"timeout must be > 0 seconds, got {self.timeout}")
        sampling = SamplingParams(self.temperature, self.top_k, self.top_p, 0 if self.seed is None else self.seed)
        object.__setattr__(self, "sampling", sampling)  # frozen: set once, here


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


class RequestFailed(GPTError):
    """A request of a group ended with an error event (`drain`): its message; `index`, which request it was."""

    def __init__(self, index: int, event: Event):
        super().__init__(event.error)
        self.index, self.event = index, event


class Tally:
    """The one reading of the engine's events, for a group of `n` requests (indexed 0 .. n - 1) whose events arrive
    interleaved: each request sends tokens, then one `done` or one `error`; the group is over once every request is
    done or any has failed. It waits for nothing: each consumer gets the events its own way (`drain` from a queue,
    the server on its event loop) and hands each one to `take`."""

    def __init__(self, n: int):
        self.left = n
        self.finish_reasons: list[str | None] = [None] * n
        self.completion_tokens = 0  # of the requests done
        self.failed: tuple[int, Event] | None = None  # (index, error event) of the first request that failed

    @property
    def over(self) -> bool:
        return self.left == 0 or self.failed is not None

    def take(self, index: int, event: Event) -> str | None:
        """The new text of a token event; None for the event that ends request `index` (kept here: its finish
        reason and tokens, or the failure)."""
        if event.kind == "token":
            return event.text
        if event.kind == "error":
            self.failed = (index, event)
        else:
            self.finish_reasons[index] = event.finish_reason
            self.completion_tokens += event.completion_tokens
            self.left -= 1
        return None


def drain(get: Callable[[], tuple[int, Event]], n: int) -> Iterator[tuple[int, str]]:
    """(index, new text) for the events of `n` requests, as `get` hands them over (waiting for each), until every
    one is done; the first error raises `RequestFailed`. A group's requests share one queue: their sinks put
    (index, event) in it, and `get` takes from it."""
    tally = Tally(n)
    while not tally.over:
        index, event = get()
        text = tally.take(index, event)
        if text is not None:
            yield index, text
    if tally.failed is not None:
        raise RequestFailed(*tally.failed)


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
