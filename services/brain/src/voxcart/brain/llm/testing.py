"""A scripted OpenAI-compatible server on 127.0.0.1, for tests and demos of LLM mode without a model.

It is a real HTTP/1.1 server (asyncio streams, chunked transfer encoding), so the client under test goes through
its real network path: each request to ``/v1/chat/completions`` is answered by the next scripted
:class:`Reply` in order (a stream of SSE events, an HTTP error, or silence), and the request bodies are kept.

Usage::

    async with ScriptedLlmServer() as server:
        server.script(text_reply("Hello there. ", "How can I help?"))
        config = LlmConfig(base_url=server.base_url, model="scripted")

Invariants: a request with no reply left is answered HTTP 500 (so a test never hangs on a missing script);
a :class:`Gate` in a stream holds the rest of it until the test opens the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from voxcart.common.tasks import cancel_and_wait

__all__ = [
    "Gate",
    "Raw",
    "Reply",
    "ScriptedLlmServer",
    "chunk",
    "text_reply",
    "tool_reply",
]


@dataclass
class Gate:
    """In a stream: wait here until :meth:`open` (e.g. until the test saw the first sentence)."""

    event: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        self.event.set()


@dataclass(frozen=True)
class Raw:
    """In a stream: bytes sent as they are (malformed events, comments)."""

    data: bytes


StreamItem = dict[str, Any] | Raw | Gate


@dataclass
class Reply:
    """The answer to one request.

    Attributes:
        events: the SSE ``data:`` objects (and raw bytes, gates) to stream, in order.
        status: an HTTP status other than 200 answers with ``body`` and no stream.
        body: the error body.
        done: end the stream with ``data: [DONE]``.
        stall: after the events, send nothing more (until the client gives up); with no events, not even the
            status line.
    """

    events: list[StreamItem] = field(default_factory=list)
    status: int = 200
    body: str = ""
    done: bool = True
    stall: bool = False


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk`` with a single choice."""
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion.chunk",
        "created": 1764000000,
        "model": "scripted",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def text_reply(*pieces: str | Gate) -> Reply:
    """A streamed text answer: a role chunk, one content chunk per piece, a ``stop`` chunk."""
    events: list[StreamItem] = [chunk({"role": "assistant", "content": ""})]
    events += [p if isinstance(p, Gate) else chunk({"content": p}) for p in pieces]
    events.append(chunk({}, "stop"))
    return Reply(events=events)


def tool_reply(*calls: tuple[str, str, dict[str, Any]], pieces: int = 3, text: str = "") -> Reply:
    """Streamed tool calls ``(id, name, arguments)``: id and name first, then the arguments JSON cut into
    ``pieces`` fragments, then ``finish_reason: tool_calls``. ``text`` is sent as content before the calls."""
    events: list[StreamItem] = [chunk({"role": "assistant", "content": text or None})]
    for index, (call_id, name, arguments) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        events.append(chunk({"tool_calls": [head]}))
        raw = json.dumps(arguments)
        step = max(1, -(-len(raw) // pieces))
        for start in range(0, len(raw), step):
            fragment = {"index": index, "function": {"arguments": raw[start : start + step]}}
            events.append(chunk({"tool_calls": [fragment]}))
    events.append(chunk({}, "tool_calls"))
    return Reply(events=events)


class ScriptedLlmServer:
    """Serves scripted replies to chat completion requests (see the module docstring)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        """The JSON bodies received, in order."""
        self.headers: list[dict[str, str]] = []
        self._replies: list[Reply] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue the answers to the next requests."""
        self._replies.extend(replies)

    @property
    def unused(self) -> int:
        """Scripted replies not yet requested."""
        return len(self._replies)

    async def __aenter__(self) -> ScriptedLlmServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        await cancel_and_wait(*self._tasks)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.headers.append(headers)
        self.requests.append(json.loads(body))
        reply = self._replies.pop(0) if self._replies else Reply(status=500, body='{"error":"no scripted reply"}')
        if reply.stall and not reply.events:
            await asyncio.Event().wait()  # not even a status line
        if reply.status != 200:
            data = reply.body.encode()
            writer.write(
                f"HTTP/1.1 {reply.status} Error\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        for item in reply.events:
            if isinstance(item, Gate):
                await item.event.wait()
                continue
            data = item.data if isinstance(item, Raw) else f"data: {json.dumps(item)}\n\n".encode()
            await _send_chunk(writer, data)
        if reply.stall:
            await asyncio.Event().wait()  # until the client disconnects and the server closes
        if reply.done:
            await _send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()
