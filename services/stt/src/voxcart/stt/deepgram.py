"""Deepgram live recognition (v1 ``listen`` websocket): one connection per call, Twilio's μ-law passed through.

Invariants:
- Audio goes out unchanged (μ-law 8 kHz mono, binary frames); control messages (``KeepAlive``, ``Finalize``,
  ``CloseStream``, ``Configure``) go out as JSON text frames. ``KeepAlive`` is sent after ``keepalive_s`` without
  any send, so a call whose audio is gated never hits Deepgram's 10 s idle close (NET-0001).
- Deepgram's times are seconds of audio since the connection's first byte. Each connection numbers the bytes of
  the entries it was sent, so a time maps back to the entry that held it, its id and its gateway ``arrived``.
  ``utterance_id = <call_sid>:<entry id of the utterance's first frame>``, the first frame being the one at
  ``SpeechStarted`` or at the first word, whichever came first; :class:`SpeechStart` is emitted once, then.
- An utterance's text is its ``is_final`` segments, joined; it ends at ``speech_final`` or ``UtteranceEnd``,
  whichever comes first. An onset followed by ``end_silence_ms + 1 s`` of finalized audio with no word is
  :class:`Discarded`. Numbers come as digits (``numerals=true``), words lower case (no punctuation requested).
- ``first/last_voiced_arrived`` are the ``arrived`` of the entries at the first word's start and the last word's
  end; ``endpointed_at`` that of the entry where the endpointing silence (or ``utterance_end_ms``) after the last
  word was complete, ``recognized_at`` when the result came in; ``checkpoint_entry`` is the last word's entry.
- The entries since the last final are kept (between utterances only the last ``idle_keep_s``; at most
  ``max_replay_s``). A connection that drops (a close we did not ask for, a reset, or no message for
  ``stall_s`` while audio flows) is reopened, up to ``reconnect_attempts`` times in a row with backoff, and those
  entries are sent again, so no word of the utterance in progress is lost: the utterance keeps its id and its
  words are recognized again. The attempt count starts over once a new connection delivers a result.
- Keyterms (Nova-3 only) go in the query when a connection opens. A later :meth:`DeepgramCallStt.listen` is
  sent as a ``Configure`` message between utterances (never mid-utterance, never by reconnecting); a rejected
  ``Configure`` turns that off for the call and the keyterms wait for the next (re)connection.
- Failures raise :class:`~voxcart.stt.provider.ProviderError` and the call stays failed: HTTP 401/403 at the
  handshake at once, 429 after one retry (waiting its ``Retry-After``, at most ``timeout_s``), a handshake slower
  than ``timeout_s``, a refused connection, reconnects exhausted. Each is logged with the call sid.
- Cloud replay is not exact: a new owner replaying after a checkpoint gets the same utterance ids at best.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import time
import urllib.parse
import weakref
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from voxcart.common.audio import FRAME_BYTES, SAMPLE_RATE
from voxcart.common.events import Expect, now_ms

from .provider import ProviderError
from .results import Discarded, Final, Partial, RecognizerEvent, SpeechStart

__all__ = ["DeepgramCallStt", "DeepgramProvider"]

log = logging.getLogger("voxcart.stt.deepgram")

MAX_KEYTERMS = 50
"""Keyterms sent per connection or ``Configure`` (Deepgram caps them at 500 tokens and, over it, silently stops)."""

_RESEND_CHUNK = SAMPLE_RATE
"""Bytes per binary frame when the buffered audio is sent again after a reconnect (1 s)."""


class _Rejected(ProviderError):
    """The server refused us for good (401/403): reconnecting cannot help."""


@dataclass(slots=True)
class _Sent:
    entry_id: str
    arrived: float
    ulaw: bytes
    offset: int = 0
    """Byte offset of the entry's first byte on the current connection."""


@dataclass(slots=True)
class _Utterance:
    id: str
    first_entry: str
    opened_s: float
    """Connection time of the onset (for the no-word discard rule)."""
    segments: list[str] = field(default_factory=list)
    weights: list[tuple[float, int]] = field(default_factory=list)
    """(confidence, words) of each ``is_final`` segment."""
    first_word: tuple[float, float] | None = None
    """(connection time, arrived) of the first word's start."""
    last_word_end: float = 0.0
    interim: str = ""
    interim_end: float = 0.0
    last_partial: str = ""

    def forget_words(self, opened_s: float) -> None:
        """After a reconnect the words are recognized again on the new connection (new times)."""
        self.segments, self.weights, self.first_word = [], [], None
        self.last_word_end, self.interim, self.interim_end, self.opened_s = 0.0, "", 0.0, opened_s


def _text(parts: Sequence[str]) -> str:
    return " ".join(" ".join(parts).lower().split())


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
        self._buffer: list[_Sent] = []
        self._buffered = 0
        self._floor = start_after
        self._bytes = 0
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
        self._ready: list[RecognizerEvent] = []
        self._utt: _Utterance | None = None
        self._keyterms: list[str] = []
        self._sent_keyterms: list[str] = []
        self._can_configure = owner.configure_keyterms and owner.keyterms_supported
        self._configuring = False
        self._flushed = asyncio.Event()

    # -- CallStt -----------------------------------------------------------------------------------------

    async def feed(self, entry_id: str, ulaw: bytes, arrived: float) -> list[RecognizerEvent]:
        if not ulaw or len(ulaw) % FRAME_BYTES:
            raise ValueError(
                f"DeepgramCallStt.feed: entry {entry_id} of call {self.call_sid}: {len(ulaw)} bytes of μ-law, "
                f"expected a non-zero multiple of {FRAME_BYTES}"
            )
        self._check_usable()
        sent = _Sent(entry_id, arrived, ulaw)
        self._buffer.append(sent)
        self._buffered += len(ulaw)
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
        self._trim()
        return self._take()

    def listen(self, expect: Expect, keyterms: Sequence[str] = ()) -> None:
        """Keyterms for what follows (Nova-3 only; see the module notes). ``expect`` is unused: numerals are on."""
        terms = list(dict.fromkeys(t.strip() for t in keyterms if t.strip()))[:MAX_KEYTERMS]
        self._keyterms = terms if self._p.keyterms_supported else []

    async def end_utterance(self) -> list[RecognizerEvent]:
        self._check_usable()
        if self._utt is None:
            return self._take()
        ws = self._ws
        if ws is not None and self._lost_reason() is None:
            self._flushed.clear()
            try:
                async with asyncio.timeout(self._p.timeout_s):
                    await self._send_text(ws, {"type": "Finalize"})
                    await self._flushed.wait()
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                log.warning(
                    "deepgram: Finalize not answered (%r); ending the utterance with what we have",
                    exc,
                    extra=self._extra,
                )
        if self._utt is not None:
            self._finish(max(self._utt.last_word_end, self._utt.interim_end), "end_utterance", None)
        return self._take()

    def checkpoint(self) -> str | None:
        if self._utt is not None:
            return None
        if not self._buffer:
            return self._floor
        newest = self._buffer[-1]
        target = newest.offset + len(newest.ulaw) - int(self._p.checkpoint_lag_s * SAMPLE_RATE)
        i = bisect.bisect_right(self._buffer, target, key=lambda s: s.offset) - 1
        if i >= 0:
            self._floor = _later(self._floor, self._buffer[i].entry_id)
        return self._floor

    @property
    def resume(self) -> str:
        return ""

    def utterance_start_entry(self) -> str | None:
        return self._utt.first_entry if self._utt is not None else None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        ws = self._ws
        if ws is not None and self._lost_reason() is None:
            self._closing = True
            try:
                async with asyncio.timeout(self._p.timeout_s):
                    await self._send_text(ws, {"type": "CloseStream"})
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
            try:
                ws = await connect(url, additional_headers=headers, open_timeout=p.timeout_s, compression=None)
            except InvalidStatus as exc:
                status, hdrs = exc.response.status_code, exc.response.headers
                body = (exc.response.body or b"")[:200].decode("utf-8", "replace")
                detail = f"HTTP {status} at handshake (dg-request-id {hdrs.get('dg-request-id', '-')}): {body!r}"
                if status in (401, 403):
                    raise _Rejected(f"deepgram: {where}: {detail}; check DEEPGRAM_API_KEY") from exc
                if status == 429 and attempt == 1:
                    wait = min(_retry_after(hdrs.get("Retry-After"), p.backoff_s), p.timeout_s)
                    log.warning("deepgram: %s; retrying once in %.2f s", detail, wait, extra=self._extra)
                    await asyncio.sleep(wait)
                    continue
                raise ProviderError(f"deepgram: {where}: {detail}") from exc
            except TimeoutError as exc:
                raise ProviderError(f"deepgram: {where}: no handshake within {p.timeout_s:g} s") from exc
            except (OSError, InvalidHandshake, InvalidURI) as exc:
                raise ProviderError(f"deepgram: {where}: cannot connect: {exc!r}") from exc
            self._sent_keyterms = list(self._keyterms)
            return ws
        raise AssertionError("unreachable")

    async def _connect(self) -> None:
        """Open a connection and send it the buffered entries (their offsets start over at 0)."""
        ws = await self._open()
        self._conn_no += 1
        self._ws, self._lost, self._bytes = ws, None, 0
        self._unanswered_since = None
        self._tasks = [
            asyncio.create_task(self._receive(ws, self._conn_no), name=f"deepgram-recv-{self.call_sid}"),
            asyncio.create_task(self._keepalive(ws), name=f"deepgram-keepalive-{self.call_sid}"),
        ]
        for sent in self._buffer:
            sent.offset, self._bytes = self._bytes, self._bytes + len(sent.ulaw)
        if self._utt is not None:
            first = next((s.offset for s in self._buffer if s.entry_id == self._utt.first_entry), 0)
            self._utt.forget_words(first / SAMPLE_RATE)
        audio = b"".join(s.ulaw for s in self._buffer)
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
                    log.info("deepgram: reconnected; %d entries sent again", len(self._buffer), extra=self._extra)
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
            ws.transport.abort()

    async def _send_audio(self, sent: _Sent) -> None:
        ws = self._ws
        assert ws is not None
        sent.offset, self._bytes = self._bytes, self._bytes + len(sent.ulaw)
        async with asyncio.timeout(self._p.timeout_s):
            await ws.send(sent.ulaw)
        self._last_send = time.monotonic()
        if self._unanswered_since is None:
            self._unanswered_since = self._last_send

    async def _send_text(self, ws: ClientConnection, message: dict[str, Any]) -> None:
        await ws.send(json.dumps(message))
        self._last_send = time.monotonic()

    async def _configure_if_idle(self) -> None:
        ws = self._ws
        if ws is None or self._utt is not None or not self._can_configure or self._keyterms == self._sent_keyterms:
            return
        try:
            await self._send_text(ws, {"type": "Configure", "keyterms": self._keyterms})
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
                await self._send_text(ws, {"type": "KeepAlive"})
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
                self._lost = f"closed by Deepgram with code {ws.close_code} ({ws.close_reason or 'no reason'})"
        except ConnectionClosed as exc:
            if not self._closing and conn_no == self._conn_no:
                self._lost = f"connection lost: {exc}"

    # -- results -----------------------------------------------------------------------------------------

    def _on_message(self, raw: str) -> None:
        try:
            message = json.loads(raw)
            kind = message.get("type")
            if kind == "Results":
                self._attempts = 0
                self._on_results(message)
            elif kind == "SpeechStarted":
                self._attempts = 0
                if self._utt is None:
                    self._open_utterance(float(message["timestamp"]))
            elif kind == "UtteranceEnd":
                if self._utt is not None and self._utt.segments:
                    self._finish(float(message["last_word_end"]), "UtteranceEnd", self._p.utterance_end_ms)
            elif kind == "Metadata":
                log.info(
                    "deepgram: stream closed: request %s, %.1f s of audio",
                    message.get("request_id"),
                    float(message.get("duration") or 0.0),
                    extra=self._extra,
                )
            elif kind == "ConfigureSuccess":
                self._configuring = False
            elif kind in ("Error", "ConfigureFailure"):
                log.warning("deepgram: server error: %s", raw[:500], extra=self._extra)
                if self._configuring:  # a rejected Configure: keyterms now wait for the next connection
                    self._configuring = self._can_configure = False
            else:
                log.debug("deepgram: %s", raw[:200], extra=self._extra)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            log.warning("deepgram: unreadable message (%r): %s", exc, raw[:200], extra=self._extra)

    def _on_results(self, message: dict[str, Any]) -> None:
        alt = message["channel"]["alternatives"][0]
        words = alt.get("words") or []
        transcript = _text([alt.get("transcript") or ""])
        end = float(message["start"]) + float(message["duration"])
        if self._utt is None and transcript and words:
            self._open_utterance(float(words[0]["start"]))
        utt = self._utt
        if utt is not None and transcript and words:
            start = float(words[0]["start"])
            if utt.first_word is None or start < utt.first_word[0]:
                entry = self._entry_at(start)
                utt.first_word = (start, entry.arrived if entry else now_ms())
        if message.get("is_final"):
            if utt is not None and transcript:
                utt.segments.append(transcript)
                utt.weights.append((float(alt.get("confidence") or 0.0), max(1, len(words))))
                utt.last_word_end = max(utt.last_word_end, float(words[-1]["end"]) if words else end)
            if utt is not None:
                utt.interim, utt.interim_end = "", 0.0
            if message.get("from_finalize"):
                self._flushed.set()
            if utt is None:
                return
            if message.get("speech_final") and utt.segments:
                self._finish(utt.last_word_end, "speech_final", self._p.end_silence_ms)
                return
            if not utt.segments and end - utt.opened_s >= (self._p.end_silence_ms + 1000) / 1000:
                self._finish(end, "no words", 0)
                return
        elif utt is not None and transcript:
            utt.interim = transcript
            utt.interim_end = float(words[-1]["end"]) if words else end
        if utt is not None:
            text = _text([*utt.segments, utt.interim])
            if text and text != utt.last_partial:
                utt.last_partial = text
                self._ready.append(Partial(utt.id, text))

    def _open_utterance(self, at: float) -> None:
        entry = self._entry_at(at)
        if entry is None:
            return
        self._utt = _Utterance(f"{self.call_sid}:{entry.entry_id}", entry.entry_id, at)
        self._ready.append(SpeechStart(self._utt.id, entry.arrived))

    def _finish(self, end_s: float, why: str, endpoint_ms: int | None) -> None:
        """Close the utterance: its Final (or Discarded), then drop the buffered entries up to its end.

        Args:
            end_s: connection time of the last word (or of the end of the wordless audio).
            why: what ended it, for the log.
            endpoint_ms: silence after ``end_s`` that ended it (``endpointed_at``); ``None``: ended now.
        """
        utt, self._utt = self._utt, None
        assert utt is not None
        now = self._p.clock()
        self._flushed.set()
        parts = utt.segments or ([utt.interim] if utt.interim else [])
        last = self._entry_at(end_s)
        last_id = last.entry_id if last is not None else self._floor
        checkpoint = self._floor = _later(self._floor, last_id)  # never behind a checkpoint already given
        if not parts:
            self._ready.append(Discarded(utt.id, last_id, checkpoint, ""))
        else:
            weights = utt.weights or [(0.0, 1)]
            confidence = sum(c * n for c, n in weights) / sum(n for _, n in weights)
            first_arrived = utt.first_word[1] if utt.first_word else (last.arrived if last else now)
            endpoint = None if endpoint_ms is None else self._entry_at(end_s + endpoint_ms / 1000, clamp=False)
            self._ready.append(
                Final(
                    utterance_id=utt.id,
                    text=_text(parts),
                    confidence=min(1.0, max(0.0, confidence)),
                    first_voiced_arrived=first_arrived,
                    last_voiced_arrived=last.arrived if last else now,
                    endpointed_at=min(now, endpoint.arrived) if endpoint else now,
                    recognized_at=now,
                    last_entry_id=last_id,
                    checkpoint_entry=checkpoint,
                    resume="",
                )
            )
            log.debug("deepgram: final at %s: %r", why, _text(parts), extra=self._extra)
        if last is not None:
            self._drop_front(self._buffer.index(last) + 1)

    def _entry_at(self, seconds: float, *, clamp: bool = True) -> _Sent | None:
        """The entry holding the byte at ``seconds`` on the current connection."""
        if not self._buffer:
            return None
        byte = int(round(seconds * SAMPLE_RATE))
        i = bisect.bisect_right(self._buffer, byte, key=lambda s: s.offset) - 1
        last = self._buffer[-1]
        if not clamp and (i < 0 or byte >= last.offset + len(last.ulaw)):
            return None
        return self._buffer[max(0, i)]

    def _trim(self) -> None:
        """Bound the replay buffer: ``idle_keep_s`` between utterances, ``max_replay_s`` always."""
        keep_s = self._p.max_replay_s if self._utt is not None else self._p.idle_keep_s
        excess, k = self._buffered - int(keep_s * SAMPLE_RATE), 0
        while excess > 0 and k < len(self._buffer) - 1:
            excess -= len(self._buffer[k].ulaw)
            k += 1
        self._drop_front(k)

    def _drop_front(self, k: int) -> None:
        self._buffered -= sum(len(s.ulaw) for s in self._buffer[:k])
        del self._buffer[:k]

    def _take(self) -> list[RecognizerEvent]:
        ready, self._ready = self._ready, []
        return ready


def _later(a: str, b: str) -> str:
    """The later of two entry ids (``<gen>-<chunk>``, compared as numbers); ``a`` if either is not one."""
    try:
        later = tuple(map(int, b.split("-"))) > tuple(map(int, a.split("-")))
    except ValueError:
        return a
    return b if later else a


def _retry_after(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds only; an HTTP date falls back to ``default``)."""
    try:
        return max(0.0, float(value)) if value else default
    except ValueError:
        return default


class DeepgramProvider:
    """Opens :class:`DeepgramCallStt` s: one Deepgram streaming connection per call.

    Args:
        api_key: the Deepgram API key (``DEEPGRAM_API_KEY``), sent as ``Authorization: Token <key>``.
        url: the v1 listen endpoint (``DEEPGRAM_URL``), ``ws://`` or ``wss://``.
        model: ``DEEPGRAM_MODEL``; keyterms are used only with ``nova-3*`` models.
        end_silence_ms: ``endpointing``: silence that ends an utterance (``STT_END_SILENCE_MS``).
        timeout_s: handshake, send, Finalize and CloseStream bound (``PROVIDER_TIMEOUT_MS`` / 1000).
        utterance_end_ms: ``utterance_end_ms``: the end-of-turn backstop when endpointing never fires (noise).
        language: ``language``.
        keepalive_s: send ``KeepAlive`` after this long without sending anything (Deepgram closes after 10 s).
        stall_s: no message for this long while audio flows counts as a dropped connection.
        reconnect_attempts: reconnects in a row before giving up.
        backoff_s: first reconnect delay (doubles each attempt); also the 429 wait without ``Retry-After``.
        max_replay_s: at most this much audio is kept to send again after a reconnect.
        idle_keep_s: between utterances, keep only this much (it covers an onset Deepgram has not reported yet).
        checkpoint_lag_s: an idle checkpoint stays this far behind the newest audio, for the same reason.
        configure_keyterms: send changed keyterms mid-stream (``Configure``) between utterances.
        clock: wall clock in epoch ms (``endpointed_at``, ``recognized_at``).

    Raises:
        ValueError: the key is empty, or a knob is out of range.
    """

    name = "deepgram"

    def __init__(
        self,
        api_key: str,
        *,
        url: str = "wss://api.deepgram.com/v1/listen",
        model: str = "nova-3",
        end_silence_ms: int = 600,
        timeout_s: float = 3.0,
        utterance_end_ms: int = 1000,
        language: str = "en",
        keepalive_s: float = 4.0,
        stall_s: float = 5.0,
        reconnect_attempts: int = 3,
        backoff_s: float = 0.2,
        max_replay_s: float = 30.0,
        idle_keep_s: float = 3.0,
        checkpoint_lag_s: float = 1.0,
        configure_keyterms: bool = True,
        clock: Callable[[], float] = now_ms,
    ) -> None:
        if not api_key:
            raise ValueError(
                "DeepgramProvider: the API key is empty (set DEEPGRAM_API_KEY, or STT_PROVIDER=pocketsphinx)"
            )
        if urllib.parse.urlsplit(url).scheme not in ("ws", "wss"):
            raise ValueError(f"DeepgramProvider: url {url!r} is not a ws:// or wss:// URL")
        if not model:
            raise ValueError("DeepgramProvider: model is empty")
        if end_silence_ms < 10 or utterance_end_ms < 10:
            raise ValueError(
                f"DeepgramProvider: end_silence_ms {end_silence_ms} / utterance_end_ms {utterance_end_ms}"
                " must be at least 10 ms"
            )
        for knob, value in (
            ("timeout_s", timeout_s),
            ("keepalive_s", keepalive_s),
            ("stall_s", stall_s),
            ("max_replay_s", max_replay_s),
            ("idle_keep_s", idle_keep_s),
        ):
            if value <= 0:
                raise ValueError(f"DeepgramProvider: {knob} must be positive, got {value}")
        if reconnect_attempts < 0 or backoff_s < 0 or checkpoint_lag_s < 0:
            raise ValueError("DeepgramProvider: reconnect_attempts, backoff_s and checkpoint_lag_s must be >= 0")
        self.api_key = api_key
        self.url = url
        self.model = model
        self.end_silence_ms = end_silence_ms
        self.timeout_s = timeout_s
        self.utterance_end_ms = utterance_end_ms
        self.language = language
        self.keepalive_s = keepalive_s
        self.stall_s = stall_s
        self.reconnect_attempts = reconnect_attempts
        self.backoff_s = backoff_s
        self.max_replay_s = max_replay_s
        self.idle_keep_s = idle_keep_s
        self.checkpoint_lag_s = checkpoint_lag_s
        self.configure_keyterms = configure_keyterms
        self.clock = clock
        self.keyterms_supported = model.startswith("nova-3")
        self._calls: weakref.WeakSet[DeepgramCallStt] = weakref.WeakSet()

    def query_url(self, keyterms: Sequence[str] = ()) -> str:
        """The listen URL with every query parameter (keyterms only for Nova-3)."""
        params = [
            ("model", self.model),
            ("encoding", "mulaw"),
            ("sample_rate", str(SAMPLE_RATE)),
            ("channels", "1"),
            ("interim_results", "true"),
            ("endpointing", str(self.end_silence_ms)),
            ("utterance_end_ms", str(self.utterance_end_ms)),
            ("vad_events", "true"),
            ("numerals", "true"),
            ("language", self.language),
        ]
        if self.keyterms_supported:
            params += [("keyterm", term) for term in keyterms[:MAX_KEYTERMS]]
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}{urllib.parse.urlencode(params, quote_via=urllib.parse.quote)}"

    def open_call(self, call_sid: str, *, start_after: str = "0-0", resume: str = "") -> DeepgramCallStt:
        """A recognizer for one call; it connects on its first ``feed`` (``resume`` is unused: Deepgram keeps none)."""
        if not call_sid:
            raise ValueError("DeepgramProvider.open_call: call_sid is empty")
        call = DeepgramCallStt(self, call_sid, start_after)
        self._calls.add(call)
        return call

    async def aclose(self) -> None:
        """Close the calls still open."""
        await asyncio.gather(*(call.aclose() for call in list(self._calls)), return_exceptions=True)
