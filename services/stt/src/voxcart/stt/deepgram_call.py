"""One call's Deepgram connection: open, send, keep alive, reconnect, close (results: :mod:`.deepgram_transcript`).

Invariants:
- Audio goes out unchanged (μ-law 8 kHz mono, binary frames); control messages go out as JSON text frames
  (:mod:`.deepgram_protocol`). ``KeepAlive`` is sent after ``keepalive_s`` without any send, so a call whose audio
  is gated never hits Deepgram's 10 s idle close (NET-0001).
- A connection that drops (a close we did not ask for, a reset, or no message for ``stall_s`` while audio flows)
  is reopened, up to ``reconnect_attempts`` times in a row with backoff, and the kept entries are sent again, so
  no word of the utterance in progress is lost: the utterance keeps its id and its words are recognized again.
  The attempt count starts over once a new connection delivers a result.
- Keyterms (Nova-3 only) go in the query when a connection opens. A later :meth:`DeepgramCallStt.listen` is
  sent as a ``Configure`` message between utterances (never mid-utterance, never by reconnecting); a rejected
  ``Configure`` turns that off for the call and the keyterms wait for the next (re)connection.
- Failures raise :class:`~voxcart.stt.provider.ProviderError` and the call stays failed: HTTP 401/403 at the
  handshake at once, 429 after one retry (waiting its ``Retry-After``, at most ``timeout_s``), a handshake slower
  than ``timeout_s``, a refused connection, reconnects exhausted. Each is logged with the call sid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE
from voxcart.common.events import Expect
from voxcart.common.metrics import ProviderMetrics, status_result

from .deepgram_protocol import (
    CLOSE_STREAM,
    FINALIZE,
    KEEP_ALIVE,
    MAX_KEYTERMS,
    ConfigureSuccess,
    Metadata,
    Results,
    ServerError,
    SpeechStarted,
    UtteranceEnd,
    configure,
    describe_close,
    describe_handshake,
    parse_message,
    retry_after,
)
from .deepgram_transcript import SentEntry, Transcript
from .provider import ProviderError
from .results import RecognizerEvent

if TYPE_CHECKING:
    from .deepgram import DeepgramProvider

__all__ = ["DeepgramCallStt"]

log = logging.getLogger("voxcart.stt.deepgram_call")

_RESEND_CHUNK = SAMPLE_RATE
METRICS = ProviderMetrics("stt", "deepgram", fallback=True)
"""``voxcart_provider_requests_total{provider="deepgram"}``: one request per connection attempt, counted when it
ends: refused or failed at the handshake (``auth``, ``rate_limited``, ``timeout``, ``error``), lost (``dropped``),
or closed by us (``ok``); the handshake time is its first response."""
"""Bytes per binary frame when the buffered audio is sent again after a reconnect (1 s)."""


class _Rejected(ProviderError):
    """The server refused us for good (401/403): reconnecting cannot help."""


class DeepgramCallStt:
    """One call on one Deepgram streaming connection (see :class:`~voxcart.stt.provider.CallStt`).

    The connection opens on the first :meth:`feed`; results arrive on a receive task and are returned by the
    next :meth:`feed`. Build it with :meth:`DeepgramProvider.open_call`.
    """

    provider = "deepgram"

    def __init__(self, owner: DeepgramProvider, call_sid: str, start_after: str) -> None:
        self._p = owner
        self.call_sid = call_sid
        self._extra = {"call_sid": call_sid}
        self._flushed = asyncio.Event()
        self._t = Transcript(
            call_sid,
            start_after,
            clock=owner.clock,
            end_silence_ms=owner.end_silence_ms,
            utterance_end_ms=owner.utterance_end_ms,
            max_replay_s=owner.max_replay_s,
            idle_keep_s=owner.idle_keep_s,
            checkpoint_lag_s=owner.checkpoint_lag_s,
            on_flush=self._flushed.set,
        )
        self._ws: ClientConnection | None = None
        self._conn_no = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._lost: str | None = None
        self._closing = False
        self._closed = False
        self._failure: ProviderError | None = None
        self._attempts = 0
        self._last_send = time.monotonic()
        self._unanswered_since: float | None = None
        self._keyterms: list[str] = []
        self._sent_keyterms: list[str] = []
        self._can_configure = owner.configure_keyterms and owner.keyterms_supported
        self._configuring = False

    # -- CallStt -----------------------------------------------------------------------------------------

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        if not ulaw or len(ulaw) % FRAME_BYTES:
            raise ValueError(
                f"DeepgramCallStt.feed: entry {entry_id} of call {self.call_sid}: {len(ulaw)} bytes of μ-law, "
                f"expected a non-zero multiple of {FRAME_BYTES}"
            )
        self._check_usable()
        sent = self._t.add(entry_id, ulaw, arrived)
        if self._ws is None and self._conn_no == 0:
            await self._guard(self._connect())
        elif (reason := self._lost_reason()) is not None:
            await self._guard(self._reconnect(reason))
        else:
            try:
                await self._send_audio(sent)
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                await self._guard(self._reconnect(f"sending audio failed: {exc!r}"))
        await self._configure_if_idle()
        self._t.trim()
        return self._t.take()

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        """Keyterms for what follows (Nova-3 only; see the module notes). ``expect`` is unused: numerals are on."""
        terms = list(dict.fromkeys(t.strip() for t in keyterms if t.strip()))[:MAX_KEYTERMS]
        self._keyterms = terms if self._p.keyterms_supported else []

    async def end_utterance(self) -> list[RecognizerEvent]:
        self._check_usable()
        if not self._t.in_utterance:
            return self._t.take()
        ws = self._ws
        if ws is not None and self._lost_reason() is None:
            self._flushed.clear()
            try:
                async with asyncio.timeout(self._p.timeout_s):
                    await self._send_text(ws, FINALIZE)
                    await self._flushed.wait()
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                log.warning(
                    "deepgram: Finalize not answered (%r); ending the utterance with what we have",
                    exc,
                    extra=self._extra,
                )
        self._t.end_now()
        return self._t.take()

    def checkpoint(self) -> str | None:
        return self._t.checkpoint()

    @property
    def resume(self) -> str:
        return ""

    def utterance_start_entry(self) -> str | None:
        return self._t.start_entry

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is not None and self._lost_reason() is None:
            self._closing = True
            try:
                async with asyncio.timeout(self._p.timeout_s):
                    await self._send_text(ws, CLOSE_STREAM)
                    await asyncio.gather(*self._tasks[:1])  # the receive task ends when Deepgram closes
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                log.info("deepgram: CloseStream not completed: %r", exc, extra=self._extra)
        await self._disconnect()

    # -- connection --------------------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise ProviderError(f"deepgram: call {self.call_sid}: used after aclose()")

    async def _guard(self, step: Coroutine[Any, Any, None]) -> None:
        """Run a connect/reconnect; a failure is final for the call."""
        try:
            await step
        except ProviderError as exc:
            self._failure = exc
            log.error("%s", exc, extra=self._extra)
            await self._disconnect()
            raise

    def _lost_reason(self) -> str | None:
        if self._lost is not None:
            return self._lost
        if self._ws is None:
            return "not connected"
        since = self._unanswered_since
        if since is not None and time.monotonic() - since > self._p.stall_s:
            return f"no message from Deepgram for {self._p.stall_s:g} s while audio flowed"
        return None

    async def _open(self) -> ClientConnection:
        """One connection, with the 429 retry; raises ProviderError."""
        p = self._p
        url = p.query_url(self._keyterms)
        headers = {"Authorization": f"Token {p.api_key}"}
        where = f"call {self.call_sid}: {p.url}"
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                ws = await connect(url, additional_headers=headers, open_timeout=p.timeout_s, compression=None)
            except InvalidStatus as exc:
                status, hdrs = exc.response.status_code, exc.response.headers
                METRICS.request(status_result(status))
                detail = describe_handshake(status, hdrs.get("dg-request-id", "-"), exc.response.body)
                if status in (401, 403):
                    raise _Rejected(f"deepgram: {where}: {detail}; check DEEPGRAM_API_KEY") from exc
                if status == 429 and attempt == 1:
                    wait = min(retry_after(hdrs.get("Retry-After"), p.backoff_s), p.timeout_s)
                    log.warning("deepgram: %s; retrying once in %.2f s", detail, wait, extra=self._extra)
                    await asyncio.sleep(wait)
                    continue
                raise ProviderError(f"deepgram: {where}: {detail}") from exc
            except TimeoutError as exc:
                METRICS.request("timeout")
                raise ProviderError(f"deepgram: {where}: no handshake within {p.timeout_s:g} s") from exc
            except (OSError, InvalidHandshake, InvalidURI) as exc:
                METRICS.request("error")
                raise ProviderError(f"deepgram: {where}: cannot connect: {exc!r}") from exc
            METRICS.first_response(time.monotonic() - started)
            self._sent_keyterms = list(self._keyterms)
            return ws
        raise AssertionError("unreachable")

    async def _connect(self) -> None:
        """Open a connection and send it the buffered entries (their offsets start over at 0)."""
        ws = await self._open()
        self._conn_no += 1
        self._ws, self._lost = ws, None
        self._unanswered_since = None
        self._tasks = [
            asyncio.create_task(self._receive(ws, self._conn_no), name=f"deepgram-recv-{self.call_sid}"),
            asyncio.create_task(self._keepalive(ws), name=f"deepgram-keepalive-{self.call_sid}"),
        ]
        audio = self._t.restart()
        try:
            async with asyncio.timeout(self._p.timeout_s):
                for i in range(0, len(audio), _RESEND_CHUNK):
                    await ws.send(audio[i : i + _RESEND_CHUNK])
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            self._lost = f"sending the buffered audio failed: {exc!r}"
            return
        self._last_send = time.monotonic()
        if audio:
            self._unanswered_since = self._last_send

    async def _reconnect(self, reason: str) -> None:
        """Reopen after a drop, with backoff; ProviderError once ``reconnect_attempts`` in a row failed."""
        p = self._p
        log.warning("deepgram: connection lost (%s); reconnecting", reason, extra=self._extra)
        while True:
            await self._disconnect()
            self._attempts += 1
            if self._attempts > p.reconnect_attempts:
                raise ProviderError(
                    f"deepgram: call {self.call_sid}: gave up after {p.reconnect_attempts} reconnects in a row; "
                    f"last: {reason}"
                )
            await asyncio.sleep(p.backoff_s * 2 ** (self._attempts - 1))
            try:
                await self._connect()
            except _Rejected:
                raise
            except ProviderError as exc:
                reason = str(exc)
            else:
                if self._lost is None:
                    log.info("deepgram: reconnected; %d entries sent again", self._t.entries, extra=self._extra)
                    return
                reason = self._lost
            log.warning("deepgram: reconnect %d failed: %s", self._attempts, reason, extra=self._extra)

    async def _disconnect(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ws, self._ws = self._ws, None
        if ws is not None:
            METRICS.request("ok" if self._closing else "dropped")
            ws.transport.abort()

    async def _send_audio(self, sent: SentEntry) -> None:
        ws = self._ws
        assert ws is not None
        self._t.number(sent)
        async with asyncio.timeout(self._p.timeout_s):
            await ws.send(sent.ulaw)
        self._last_send = time.monotonic()
        if self._unanswered_since is None:
            self._unanswered_since = self._last_send

    async def _send_text(self, ws: ClientConnection, message: str) -> None:
        await ws.send(message)
        self._last_send = time.monotonic()

    async def _configure_if_idle(self) -> None:
        ws = self._ws
        if ws is None or self._t.in_utterance or not self._can_configure or self._keyterms == self._sent_keyterms:
            return
        try:
            await self._send_text(ws, configure(self._keyterms))
            self._sent_keyterms, self._configuring = list(self._keyterms), True
        except (ConnectionClosed, OSError):
            pass  # the receive task reports the drop

    async def _keepalive(self, ws: ClientConnection) -> None:
        every = self._p.keepalive_s
        try:
            while True:
                idle = time.monotonic() - self._last_send
                if idle < every:
                    await asyncio.sleep(every - idle)
                    continue
                await self._send_text(ws, KEEP_ALIVE)
        except (ConnectionClosed, OSError):
            return

    async def _receive(self, ws: ClientConnection, conn_no: int) -> None:
        try:
            async for message in ws:
                if conn_no != self._conn_no:
                    return
                self._unanswered_since = None
                if isinstance(message, str):
                    self._on_message(message)
            if not self._closing and conn_no == self._conn_no:
                self._lost = describe_close(ws.close_code, ws.close_reason)
        except ConnectionClosed as exc:
            if not self._closing and conn_no == self._conn_no:
                self._lost = f"connection lost: {exc}"

    def _on_message(self, raw: str) -> None:
        """One server message: results go to the transcript; the rest is configuration state or a log line."""
        try:
            message = parse_message(raw)
            if isinstance(message, Results):
                self._attempts = 0
                self._t.on_results(message)
            elif isinstance(message, SpeechStarted):
                self._attempts = 0
                self._t.on_speech_started(message.timestamp)
            elif isinstance(message, UtteranceEnd):
                self._t.on_utterance_end(message.last_word_end)
            elif isinstance(message, Metadata):
                log.info(
                    "deepgram: stream closed: request %s, %.1f s of audio",
                    message.request_id,
                    message.duration,
                    extra=self._extra,
                )
            elif isinstance(message, ConfigureSuccess):
                self._configuring = False
            elif isinstance(message, ServerError):
                log.warning("deepgram: server error: %s", raw[:500], extra=self._extra)
                if self._configuring:  # a rejected Configure: keyterms now wait for the next connection
                    self._configuring = self._can_configure = False
            else:
                log.debug("deepgram: %s", raw[:200], extra=self._extra)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            log.warning("deepgram: unreadable message (%r): %s", exc, raw[:200], extra=self._extra)
