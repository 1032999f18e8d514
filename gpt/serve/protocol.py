"""OpenAI's completions API as pydantic models: the request (its validation is every 400 of the server), the
response and the streamed chunk, and OpenAI's error object. No engine, no HTTP."""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from gpt.engine import GenerationParams
from gpt.errors import GPTError

MAX_N = 16  # choices per prompt
MAX_PROMPTS = 64  # prompts per request


DONE = "[DONE]"  # the data of a stream's last server-sent event (OpenAI's)

class APIError(Exception):
    """An error answered with OpenAI's error object: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: StrictBool = False


class CompletionRequest(BaseModel):
    """The fields of OpenAI's `POST /v1/completions`, strictly typed; unknown fields are refused (a typo such
    as `max_token` would otherwise be silently ignored). `top_k` and `draft_tokens` are our extensions."""

    model_config = ConfigDict(extra="forbid")

    model: StrictStr
    prompt: StrictStr | list[StrictStr] = "\n"
    max_tokens: StrictInt | None = 16
    temperature: StrictFloat | StrictInt | None = 1.0
    top_p: StrictFloat | StrictInt | None = 1.0
    top_k: StrictInt | None = 0
    draft_tokens: StrictInt | None = None  # speculative decoding (a server started with --speculative): 0 = off
    n: StrictInt | None = 1
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None
    echo: StrictBool | None = False
    # OpenAI fields this server does not implement: accepted only at their "off" values
    logprobs: StrictInt | None = None
    best_of: StrictInt | None = None
    suffix: StrictStr | None = None
    frequency_penalty: StrictFloat | StrictInt | None = 0
    presence_penalty: StrictFloat | StrictInt | None = 0
    logit_bias: dict[StrictStr, StrictFloat | StrictInt] | None = None

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts:
            raise APIError(400, "prompt must be a string or a non-empty list of strings", "prompt")
        if len(prompts) > MAX_PROMPTS:
            raise APIError(400, f"prompt holds {len(prompts)} prompts; at most {MAX_PROMPTS} per request", "prompt")
        return prompts

    def generation_params(self, max_tokens_limit: int, timeout: float | None) -> GenerationParams:
        for name, off in (("logprobs", None), ("suffix", None), ("frequency_penalty", 0), ("presence_penalty", 0)):
            if getattr(self, name) not in (off, None):
                raise APIError(400, f"{name} is not supported by this server", name)
        if self.best_of not in (None, 1):
            raise APIError(400, "best_of is not supported by this server (only 1)", "best_of")
        if self.logit_bias:
            raise APIError(400, "logit_bias is not supported by this server", "logit_bias")
        n = 1 if self.n is None else self.n
        if not 1 <= n <= MAX_N:
            raise APIError(400, f"n must be in [1, {MAX_N}], got {n}", "n")
        max_tokens = 16 if self.max_tokens is None else self.max_tokens
        if not 1 <= max_tokens <= max_tokens_limit:
            raise APIError(400, f"max_tokens must be in [1, {max_tokens_limit}], got {max_tokens}", "max_tokens")
        stop = () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        values = {"temperature": 1.0 if self.temperature is None else float(self.temperature),
                  "top_p": 1.0 if self.top_p is None else float(self.top_p),
                  "top_k": self.top_k or 0}
        try:
            return GenerationParams(max_tokens=max_tokens, stop=stop, seed=self.seed, timeout=timeout,
                                    draft_tokens=self.draft_tokens, **values)
        except GPTError as e:
            message = str(e)  # the sampler's checks name its command-line options: name the API's fields
            for option, field in (("--top-k", "top_k"), ("--top-p", "top_p"), ("--temperature", "temperature")):
                message = message.replace(option, field)
            fields = ("temperature", "top_p", "top_k", "stop")
            param = next((name for name in fields if name in message), None)
            raise APIError(400, message, param) from None


def parse_request(body: bytes) -> CompletionRequest:
    try:
        return CompletionRequest.model_validate_json(body)
    except ValidationError as e:
        first = e.errors()[0]
        loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
        param = loc[0] if loc else None
        if first["type"] == "json_invalid":
            raise APIError(400, f"the body is not valid JSON: {first['msg']}", None, "invalid_json") from None
        if first["type"] == "model_type":
            raise APIError(400, "the body must be a JSON object", None) from None
        if first["type"] == "extra_forbidden":
            raise APIError(400, f"unknown field {param!r}", param) from None
        if first["type"] == "missing":
            raise APIError(400, f"missing required field {param!r}", param) from None
        raise APIError(400, f"{param or 'body'}: {first['msg']} (got {first.get('input')!r})"[:300], param) from None


class Choice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """A response as OpenAI sends it (and the last chunk of a stream with `include_usage`; app.py writes the
    other chunks as plain dicts of the same fields, on the hot path)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage | None = None


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"
