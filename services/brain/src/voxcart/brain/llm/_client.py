"""A streaming client for OpenAI-compatible chat completions (``POST …/v1/chat/completions``, ``stream: true``).

Invariants:
- Text deltas are yielded as they arrive; tool calls are assembled per ``index`` (first non-null ``id`` and
  ``name`` kept, ``arguments`` fragments concatenated) and handed over only once the stream has finished.
- Every way a request can fail (no connection, an HTTP status other than 200, an ``error`` object in the
  stream, an SSE ``data:`` line that is not JSON, a stream that ends before it finished, no first token within
  ``first_token_s``, no bytes for ``idle_s``) raises :class:`LlmError`, naming what went wrong and where.
- Nothing is retried here: a voice turn cannot wait for a retry; the caller of the client falls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import msgspec

from voxcart.common.metrics import ProviderMetrics, status_result

__all__ = ["LlmClient", "LlmConfig", "LlmError", "StreamEnd", "TextDelta", "ToolCall"]

_MAX_ERROR_BODY: Final = 500
METRICS: Final = ProviderMetrics("brain", "llm", fallback=True)
"""``voxcart_provider_requests_total{provider="llm"}``: one request per :meth:`LlmClient.stream`, counted when it
ends; its first delta (text, or the end of a tool-call-only reply) is its first response."""


class LlmError(Exception):
    """A chat completion request failed.

    Attributes:
        kind: ``connect``, ``status``, ``timeout``, ``protocol`` (malformed or truncated stream) or ``server``
            (an ``error`` object in the stream).
        status: the HTTP status, when one was received.
        body: the start of the error body, when there was one.
    """

    def __init__(self, kind: str, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.body = body


@dataclass(frozen=True)
class LlmConfig:
    """Where the model is and how long to wait for it.

    ``base_url`` may end in ``/v1`` (the OpenAI SDK convention) or not; ``/chat/completions`` or
    ``/v1/chat/completions`` is appended accordingly.
    """

    base_url: str
    model: str
    api_key: str = ""
    """Sent as ``Authorization: Bearer <key>`` when set (local servers usually need none)."""
    connect_s: float = 3.0
    """Time to open the connection."""
    first_token_s: float = 3.0
    """From sending a request to its first content or tool-call delta."""
    idle_s: float = 3.0
    """Longest silence between two stream reads once tokens flow."""
    temperature: float = 0.3
    max_tokens: int = 300

    @property
    def url(self) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class TextDelta(msgspec.Struct, frozen=True):
    """A piece of the assistant's text."""

    text: str


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """One complete tool call; ``arguments`` is the JSON text as the model wrote it (it may not parse)."""

    id: str
    name: str
    arguments: str


class StreamEnd(msgspec.Struct, frozen=True, kw_only=True):
    """The stream finished: why, and the tool calls it asked for (in index order)."""

    finish_reason: str
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)


@dataclass
class _PartialCall:
    id: str | None = None
    name: str | None = None
    arguments: list[str] = field(default_factory=list)


class LlmClient:
    """Streams chat completions from one OpenAI-compatible server.

    Args:
        config: the endpoint, model and timeouts.
        transport: an httpx transport to use instead of the network (tests).
    """

    def __init__(self, config: LlmConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        timeout = httpx.Timeout(connect=config.connect_s, read=None, write=config.connect_s, pool=config.connect_s)
        headers = {"Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] = (),
        *,
        deadline: float | None = None,
    ) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """Send one chat completion request and yield its text as it streams, then one :class:`StreamEnd`.

        Args:
            messages: the conversation, in the wire format (``role``, ``content``, ``tool_calls``…).
            tools: function tool definitions (``{"type": "function", "function": {...}}``).
            deadline: a ``time.monotonic()`` instant by which the whole stream must have ended.

        Raises:
            LlmError: see the module invariants.
        """
        start = time.monotonic()
        result, answered = "cancelled", False  # "cancelled": the consumer stopped before the end
        try:
            async with contextlib.aclosing(self._request(messages, tools, deadline)) as items:
                async for item in items:
                    if not answered:
                        answered = True
                        METRICS.first_response(time.monotonic() - start)
                    if isinstance(item, StreamEnd):
                        result = "ok"
                    yield item
        except LlmError as exc:
            if exc.kind == "status":
                result = status_result(exc.status)
            elif exc.kind == "timeout":
                result = "timeout"
            else:  # a connection lost once the reply flowed is a drop; anything else is an error
                result = "dropped" if exc.kind == "connect" and answered else "error"
            raise
        finally:
            METRICS.request(result)

    async def _request(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]], deadline: float | None
    ) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        """:meth:`stream` without the metrics."""
        cfg = self.config
        body: dict[str, Any] = {
            "model": cfg.model,
            "messages": list(messages),
            "stream": True,
            "temperature": cfg.temperature,
            "max_tokens": cfg.max_tokens,
        }
        if tools:
            body["tools"] = list(tools)
            body["tool_choice"] = "auto"
        start = time.monotonic()
        end = deadline if deadline is not None else float("inf")
        first = min(time.monotonic() + cfg.first_token_s, end)
        try:
            async with asyncio.timeout_at(_loop_time(first)) as request_timeout:
                async with self._http.stream("POST", cfg.url, json=body) as response:
                    if response.status_code != 200:
                        raw = await response.aread()
                        text = raw.decode("utf-8", "replace")[:_MAX_ERROR_BODY]
                        raise LlmError(
                            "status",
                            f"{cfg.url} answered HTTP {response.status_code}: {text or '(empty body)'}",
                            status=response.status_code,
                            body=text,
                        )
                    request_timeout.reschedule(None)
                    async with contextlib.aclosing(self._events(response, first, end)) as events:
                        async for item in events:
                            yield item
        except TimeoutError:
            raise LlmError("timeout", f"{cfg.url}: no answer within {first - start:.2g} s") from None
        except httpx.TimeoutException as exc:
            raise LlmError("timeout", f"{cfg.url}: {type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise LlmError("connect", f"{cfg.url}: {type(exc).__name__}: {exc}") from None

    async def _events(
        self, response: httpx.Response, first_deadline: float, end: float
    ) -> AsyncGenerator[TextDelta | StreamEnd, None]:
        cfg = self.config
        calls: dict[int, _PartialCall] = {}
        finish: str | None = None
        got_token = False
        data: list[str] = []
        lines = response.aiter_lines().__aiter__()
        lineno = 0
        event_line = 0  # the line its current event started on, for error messages
        while True:
            limit = first_deadline if not got_token else min(time.monotonic() + cfg.idle_s, end)
            try:
                async with asyncio.timeout_at(_loop_time(limit)):
                    line = await lines.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                if time.monotonic() >= end:
                    raise LlmError("timeout", f"{cfg.url}: the reply did not finish in time") from None
                waited = "first token" if not got_token else f"next chunk after {cfg.idle_s:g} s"
                raise LlmError("timeout", f"{cfg.url}: stream stalled waiting for the {waited}") from None
            lineno += 1
            if line.startswith(":"):
                continue  # SSE comment (keep-alive)
            if line.startswith("data:"):
                event_line = event_line if data else lineno
                data.append(line[5:].removeprefix(" "))
                continue
            if line.strip() or not data:
                continue  # other SSE fields (event:, id:, retry:) or a blank line between events
            payload, data = "\n".join(data), []
            if payload.strip() == "[DONE]":
                break
            chunk = _parse_chunk(payload, cfg.url, event_line)
            for text, reason in _apply(chunk, calls, cfg.url, event_line):
                if text:
                    got_token = True
                    yield TextDelta(text)
                if reason:
                    finish = reason
            got_token = got_token or bool(calls)
        if data:  # a last event without its blank line
            payload = "\n".join(data)
            if payload.strip() != "[DONE]":
                chunk = _parse_chunk(payload, cfg.url, event_line)
                for text, reason in _apply(chunk, calls, cfg.url, event_line):
                    if text:
                        yield TextDelta(text)
                    finish = reason or finish
        if finish is None:
            raise LlmError("protocol", f"{cfg.url}: the stream ended before a finish_reason")
        yield StreamEnd(finish_reason=finish, tool_calls=_assemble(calls))


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic`` deadline on the event loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (deadline - time.monotonic())


def _parse_chunk(payload: str, url: str, lineno: int) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise LlmError(
            "protocol", f"{url}: SSE line {lineno}: data is not JSON ({exc.msg}): {payload[:120]!r}"
        ) from None
    if not isinstance(chunk, dict):
        raise LlmError("protocol", f"{url}: SSE line {lineno}: expected a JSON object, got {payload[:120]!r}")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise LlmError("server", f"{url}: the server sent an error in the stream: {message}")
    return chunk


def _apply(chunk: dict[str, Any], calls: dict[int, _PartialCall], url: str, lineno: int) -> list[tuple[str, str]]:
    """Fold one chunk into ``calls``; returns ``(text, finish_reason)`` pairs of its choices (index 0 only)."""
    out: list[tuple[str, str]] = []
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise LlmError("protocol", f"{url}: SSE line {lineno}: 'choices' is not a list")
    for choice in choices:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise LlmError("protocol", f"{url}: SSE line {lineno}: 'delta' is not an object")
        for fragment in delta.get("tool_calls") or []:
            if not isinstance(fragment, dict):
                raise LlmError("protocol", f"{url}: SSE line {lineno}: a tool_calls entry is not an object")
            index = fragment.get("index", len(calls) if fragment.get("id") else max(calls, default=0))
            if not isinstance(index, int):
                raise LlmError("protocol", f"{url}: SSE line {lineno}: tool call index {index!r} is not an int")
            call = calls.setdefault(index, _PartialCall())
            call.id = call.id or fragment.get("id")
            function = fragment.get("function") or {}
            call.name = call.name or function.get("name")
            arguments = function.get("arguments")
            if isinstance(arguments, str):
                call.arguments.append(arguments)
            elif arguments is not None:  # some servers send the arguments as an object
                call.arguments.append(json.dumps(arguments))
        content = delta.get("content")
        out.append((content if isinstance(content, str) else "", choice.get("finish_reason") or ""))
    return out


def _assemble(calls: dict[int, _PartialCall]) -> list[ToolCall]:
    return [
        ToolCall(id=call.id or f"call_{index}", name=call.name or "", arguments="".join(call.arguments))
        for index, call in sorted(calls.items())
    ]
