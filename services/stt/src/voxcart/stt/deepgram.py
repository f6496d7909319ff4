"""Deepgram live recognition (v1 ``listen`` websocket): one connection per call, Twilio's μ-law passed through.

Invariants:
- :class:`DeepgramProvider` holds the settings and opens one :class:`DeepgramCallStt` per call; the call connects
  on its first ``feed``. The contract is kept with the code it concerns:
  :mod:`.deepgram_call`: the connection (audio and control frames, ``KeepAlive``, reconnects with the buffered
  audio sent again, keyterms and ``Configure``, the failures that raise
  :class:`~voxcart.stt.provider.ProviderError`);
  :mod:`.deepgram_transcript`: results to events (times to entries, utterance ids, ``is_final`` segments ending at
  ``speech_final`` or ``UtteranceEnd``, the no-word discard, the ``*_arrived`` times, checkpoints, the replay buffer);
  :mod:`.deepgram_protocol`: the wire (query parameters, message shapes, close codes, [unconfirmed] notes).
- Keyterms are used only with ``nova-3*`` models; at most ``MAX_KEYTERMS`` per connection or ``Configure``.
- Cloud replay is not exact: a new owner replaying after a checkpoint gets the same utterance ids at best.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import weakref
from collections.abc import Callable, Sequence

from voxcart.common.events import now_ms

from . import deepgram_protocol
from .deepgram_call import DeepgramCallStt
from .deepgram_protocol import MAX_KEYTERMS as MAX_KEYTERMS

__all__ = ["DeepgramCallStt", "DeepgramProvider"]


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
        return deepgram_protocol.query_url(
            self.url,
            model=self.model,
            end_silence_ms=self.end_silence_ms,
            utterance_end_ms=self.utterance_end_ms,
            language=self.language,
            keyterms=keyterms,
        )

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
