"""ElevenLabs as a :class:`~voxcart.tts.voice.Voice`: WebSocket stream-input first, HTTP streaming as fallback.

The wire protocol (URLs, messages, error classification, key scrubbing) is in
:mod:`voxcart.tts.elevenlabs_protocol`; this module owns the sockets, the HTTP client and the fallback between them.

Invariants:
- One websocket speaks exactly one sentence. On stream-input ``isFinal`` only follows the end-of-input message,
  which ends the socket (a bare flush has no end marker), so a reused socket could not tell where a sentence's
  audio stops, and a cancelled sentence could only be stopped by closing it anyway. To save the handshake, each
  call keeps at most one *spare* socket, opened (handshake only, no text) when a sentence's first audio arrives
  and used by the call's next sentence while younger than ``inactivity_timeout_s - 5`` s. A spare never carried
  text, so audio of a cancelled sentence can never come back on it.
- Chunks are μ-law 8 kHz, whole 20 ms frames (:class:`~voxcart.tts.rechunk.Rechunker`): the first as soon as one
  frame is there (at most ``chunk_ms``), then exactly ``chunk_ms`` each, the last padded with μ-law silence.
- Once ``cancel`` is set no further chunk is yielded (checked before every yield and every 20 ms while waiting)
  and the sentence's socket or HTTP stream is closed in the background.
- Before any chunk was yielded, a failure other than authentication (a stale spare, a refused or 429 handshake,
  a drop) moves to the next transport: spare -> fresh websocket -> HTTP, once each, all within one
  ``timeout_s`` budget for the first audio. 401/403 is final. Errors are :class:`VoiceError` naming the engine,
  voice id, transport and cause; the API key never appears in them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.protocol import State

from voxcart.common.audio import FRAME_MS, SAMPLE_RATE
from voxcart.common.metrics import ProviderMetrics
from voxcart.tts import elevenlabs_protocol as protocol
from voxcart.tts.elevenlabs_protocol import OUTPUT_FORMAT, TransportFailure, sentence_messages, stream_urls
from voxcart.tts.rechunk import Rechunker
from voxcart.tts.text import normalize_text
from voxcart.tts.voice import VoiceError

__all__ = ["ElevenLabsVoice"]

log = logging.getLogger("voxcart.tts.elevenlabs")

_POLL_S: Final = FRAME_MS / 1000
"""How often a waiting stream looks at ``cancel`` (a :class:`threading.Event` cannot be awaited)."""
_SPARE_MARGIN_S: Final = 5.0
METRICS: Final = ProviderMetrics("tts", "elevenlabs", fallback=True)
"""``voxcart_provider_requests_total{provider="elevenlabs"}``: one request per sentence per transport (websocket,
then HTTP if that failed first), counted when it ends; its first audio is its first response."""
_T = TypeVar("_T")


class _End:
    """The transport delivered the whole sentence."""


_END: Final = _End()
_Item = bytes | _End | TransportFailure


@dataclass(eq=False)
class _Call:
    sid: str
    ended: bool = False
    spare: asyncio.Task[ClientConnection | None] | None = None
    spare_started: float = 0.0
    pumps: set[asyncio.Task[None]] = field(default_factory=set)


class ElevenLabsVoice:
    """ElevenLabs text-to-speech, μ-law 8 kHz straight from the service (no transcoding).

    Args:
        api_key: the ``xi-api-key`` (``ELEVENLABS_API_KEY``); sent only as a header.
        base_url: ``ELEVENLABS_URL``; the websocket URL is derived from it (https -> wss, http -> ws).
        voice_id: ``ELEVENLABS_VOICE_ID``.
        model: ``ELEVENLABS_MODEL`` (``eleven_flash_v2_5`` is the low-latency one).
        timeout_s: ``PROVIDER_TIMEOUT_MS`` / 1000: budget for the first audio of a sentence (connect, fallback
            and all), and the longest silence allowed between two audio messages after it.
        chunk_ms: audio per chunk after the first; a positive multiple of 20 ms.
        ws_url: the full stream-input URL (query included) instead of the derived one (proxies, tests).
        inactivity_timeout_s: sent to the server (1..180 s); a spare socket older than this less 5 s is not used.
        keep_spare: keep a spare socket per call (see the module notes); False opens one socket per sentence
            on demand and holds nothing between sentences.
        normalize: text rewriting before sending (default :func:`~voxcart.tts.text.normalize_text`: spells order
            numbers, reads prices); None sends the text as given.

    Raises:
        ValueError: a parameter is out of range, the key is empty or the URL is not http(s).
    """

    name = "elevenlabs"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.elevenlabs.io",
        voice_id: str,
        model: str,
        timeout_s: float,
        chunk_ms: int = 100,
        ws_url: str | None = None,
        inactivity_timeout_s: int = 60,
        keep_spare: bool = True,
        normalize: Callable[[str], str] | None = normalize_text,
    ) -> None:
        if not api_key:
            raise ValueError("ElevenLabsVoice: api_key is empty (set ELEVENLABS_API_KEY)")
        if not voice_id or not model:
            raise ValueError(f"ElevenLabsVoice: voice_id and model are required (got {voice_id!r}, {model!r})")
        if chunk_ms <= 0 or chunk_ms % FRAME_MS:
            raise ValueError(f"ElevenLabsVoice chunk_ms: expected a positive multiple of {FRAME_MS}, got {chunk_ms}")
        if timeout_s <= 0:
            raise ValueError(f"ElevenLabsVoice timeout_s: expected > 0, got {timeout_s}")
        if not 1 <= inactivity_timeout_s <= 180:
            raise ValueError(f"ElevenLabsVoice inactivity_timeout_s: expected 1..180, got {inactivity_timeout_s}")
        derived_ws_url, http_url = stream_urls(
            base_url, voice_id=voice_id, model=model, inactivity_timeout_s=inactivity_timeout_s
        )
        self._key = api_key
        self.voice_id = voice_id
        self.model = model
        self.timeout_s = timeout_s
        self.chunk_bytes = SAMPLE_RATE * chunk_ms // 1000
        """μ-law bytes per chunk (800 for 100 ms)."""
        self.ws_url = ws_url or derived_ws_url
        """The stream-input endpoint."""
        self.http_url = http_url
        """The HTTP streaming endpoint (``output_format`` is added as a query parameter)."""
        self._spare_max_age = max(0.0, inactivity_timeout_s - _SPARE_MARGIN_S)
        self._keep_spare = keep_spare
        self._normalize = normalize
        self._calls: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._http: httpx.AsyncClient | None = None
        self._closed = False

    # --- the Voice interface ------------------------------------------------------------------------------

    async def synthesize(self, text: str, *, call_sid: str, cancel: threading.Event) -> AsyncGenerator[bytes, None]:
        """Speak one sentence of ``call_sid``'s reply; see the module notes for the guarantees.

        Consume it with ``contextlib.aclosing`` (or run it to the end): leaving an ``async for`` early does
        not close an async generator, and only closing it stops the transport at once.

        Raises:
            VoiceError: (while iterating) authentication failed, no audio within ``timeout_s``, or the stream
                dropped after audio was yielded (``chunks_yielded`` > 0).
        """
        if self._closed:
            raise VoiceError(f"elevenlabs (voice {self.voice_id}): the voice is closed")
        spoken = (self._normalize(text) if self._normalize is not None else text).strip()
        if not spoken:
            return
        call = self._calls.setdefault(call_sid, _Call(call_sid))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        yielded = 0
        for transport in ("websocket", "HTTP"):
            source = self._ws_audio(call, spoken) if transport == "websocket" else self._http_audio(spoken)
            queue: asyncio.Queue[_Item] = asyncio.Queue()
            pump = self._spawn(self._pump(source, queue))
            call.pumps.add(pump)
            pump.add_done_callback(call.pumps.discard)
            rechunk = Rechunker(self.chunk_bytes)
            until = deadline
            started, heard, result = loop.time(), False, "cancelled"
            try:
                while True:
                    item = await self._next(queue, cancel, until)
                    if item is None:
                        return  # cancelled
                    if isinstance(item, TransportFailure):
                        failure, result = item, item.result
                        break
                    if isinstance(item, _End):
                        result = "ok"
                        for chunk in rechunk.finish():
                            if cancel.is_set():
                                return
                            yielded += 1
                            yield chunk
                        return
                    until = loop.time() + self.timeout_s
                    if not heard:
                        heard = True
                        METRICS.first_response(loop.time() - started)
                    for chunk in rechunk.push(item):
                        if cancel.is_set():
                            return
                        yielded += 1
                        yield chunk
            finally:
                pump.cancel()
                METRICS.request(result)
            if failure.final or call.ended or self._closed or yielded or transport == "HTTP":
                raise VoiceError(
                    f"elevenlabs (voice {self.voice_id}, {transport}): {failure}"
                    + (f" after {yielded} chunks" if yielded else ""),
                    chunks_yielded=yielded,
                )
            log.warning("elevenlabs websocket failed for %s (%s); speaking the sentence over HTTP", call_sid, failure)

    async def end_call(self, call_sid: str) -> None:
        """Close the call's spare socket and stop any sentence of it still streaming."""
        call = self._calls.pop(call_sid, None)
        if call is None:
            return
        call.ended = True
        tasks: list[asyncio.Task[Any]] = [*call.pumps]
        spare = call.spare
        if spare is not None:
            if spare.done() and not spare.cancelled() and spare.exception() is None and (ws := spare.result()):
                tasks.append(self._spawn(ws.close()))
            else:
                spare.cancel()  # a handshake in progress
                tasks.append(spare)
        for pump in call.pumps:
            pump.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Close every socket and the HTTP client; later ``synthesize`` calls raise :class:`VoiceError`."""
        self._closed = True
        for call_sid in list(self._calls):
            await self.end_call(call_sid)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def prewarm(self, call_sid: str) -> None:
        """Open the call's spare socket now (e.g. when the call starts) and wait for its handshake.

        Optional: without it the spare is opened during the call's first sentence. Failures are not raised here;
        the next sentence simply opens its own socket.
        """
        if self._closed:
            return
        call = self._calls.setdefault(call_sid, _Call(call_sid))
        self._start_spare(call)
        if call.spare is not None:
            await asyncio.wait([call.spare])

    # --- transports ---------------------------------------------------------------------------------------

    async def _ws_audio(self, call: _Call, text: str) -> AsyncIterator[bytes]:
        """The sentence's audio over a websocket: the spare if usable (once), else a fresh one."""
        spare = await self._take_spare(call)
        while True:
            ws = spare or await self._connect()
            heard = False
            try:
                async for data in self._speak(ws, text):
                    if not heard:
                        heard = True
                        self._start_spare(call)
                    yield data
                return
            except TransportFailure as failure:
                if spare is None or heard or failure.final:
                    raise
                log.info("elevenlabs spare socket unusable (%s); opening a fresh one", failure)
                spare = None
            finally:
                self._spawn(ws.close())  # in the background: the sentence's end need not wait for the close

    async def _speak(self, ws: ClientConnection, text: str) -> AsyncIterator[bytes]:
        try:
            for message in sentence_messages(text):
                await ws.send(message)
            async for raw in ws:
                parsed = protocol.parse_server_message(raw)
                if parsed.audio:
                    yield parsed.audio
                if parsed.final:
                    return
                if parsed.error is not None:
                    raise protocol.server_error(parsed.error, self._scrub)
            raise protocol.closed_early(ws.close_code, ws.close_reason, self._scrub)
        except ConnectionClosed as exc:
            raise protocol.connection_dropped(exc, self._scrub) from exc

    async def _connect(self) -> ClientConnection:
        try:
            return await connect(
                self.ws_url,
                additional_headers={"xi-api-key": self._key},
                open_timeout=self.timeout_s,
                close_timeout=1.0,
            )
        except InvalidStatus as exc:
            raise protocol.handshake_refused(exc.response.status_code, exc.response.body or b"", self._scrub) from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            raise protocol.not_opened(exc, self._scrub) from exc

    async def _http_audio(self, text: str) -> AsyncIterator[bytes]:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s))
        try:
            async with self._http.stream(
                "POST",
                self.http_url,
                params={"output_format": OUTPUT_FORMAT},
                headers={"xi-api-key": self._key},
                json={"text": text, "model_id": self.model},
            ) as response:
                if response.status_code != 200:
                    raise protocol.http_refused(response.status_code, await response.aread(), self._scrub)
                async for data in response.aiter_bytes():
                    if data:
                        yield data
        except httpx.HTTPError as exc:
            raise protocol.http_error(exc, self._scrub, timed_out=isinstance(exc, httpx.TimeoutException)) from exc

    # --- plumbing -----------------------------------------------------------------------------------------

    async def _pump(self, source: AsyncIterator[bytes], queue: asyncio.Queue[_Item]) -> None:
        """Runs one transport in its own task (so cancelling it closes the transport cleanly)."""
        try:
            async for data in source:
                queue.put_nowait(data)
            queue.put_nowait(_END)
        except TransportFailure as failure:
            queue.put_nowait(failure)
        except asyncio.CancelledError:
            queue.put_nowait(TransportFailure("stopped (call ended or voice closed)", result="cancelled"))
            raise
        except Exception as exc:  # a bug or an unforeseen library error: still a clean VoiceError for the worker
            log.exception("elevenlabs transport failed unexpectedly")
            queue.put_nowait(protocol.unexpected(exc, self._scrub))

    async def _next(self, queue: asyncio.Queue[_Item], cancel: threading.Event, until: float) -> _Item | None:
        """The next item, None once ``cancel`` is set, or a timeout failure at ``until``."""
        loop = asyncio.get_running_loop()
        while not cancel.is_set():
            remaining = until - loop.time()
            if remaining <= 0:
                return TransportFailure(f"timeout: no audio for {self.timeout_s:g} s", final=True, result="timeout")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(_POLL_S, remaining)):
                    return await queue.get()
        return None

    def _start_spare(self, call: _Call) -> None:
        if self._keep_spare and not self._closed and call.spare is None and self._calls.get(call.sid) is call:
            call.spare = self._spawn(self._open_spare())
            call.spare_started = asyncio.get_running_loop().time()

    async def _open_spare(self) -> ClientConnection | None:
        try:
            return await self._connect()
        except TransportFailure as failure:
            log.info("elevenlabs spare socket not opened: %s", failure)
            return None

    async def _take_spare(self, call: _Call) -> ClientConnection | None:
        task, call.spare = call.spare, None
        if task is None:
            return None
        ws = await task
        if ws is None:
            return None
        if asyncio.get_running_loop().time() - call.spare_started > self._spare_max_age or ws.state is not State.OPEN:
            self._spawn(ws.close())
            return None
        return ws

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _scrub(self, text: str) -> str:
        return protocol.scrub_key(text, self._key)
