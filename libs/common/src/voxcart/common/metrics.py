"""Prometheus metrics shared by every service, and a tiny /healthz + /metrics server for the workers.

Label sets are bounded: a service name, a reason from a fixed list, a stream *kind* (``audio.in``), never a
CallSid.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "BUS_BATCH_SIZE",
    "BUS_BACKLOG",
    "BUS_FRAME_AGE",
    "BUS_LAG",
    "BUS_LAG_BUCKETS",
    "BUS_PUBLISH_SECONDS",
    "COMMITS",
    "DEDUPE_HITS",
    "DLQ_TOTAL",
    "LATENCY_BUCKETS",
    "LEASE_ACQUIRED",
    "LEASE_LOST",
    "OWNED_CALLS",
    "PROVIDER_FALLBACKS",
    "PROVIDER_FIRST_RESPONSE",
    "PROVIDER_REQUESTS",
    "PROVIDER_RESULTS",
    "STREAM_KINDS",
    "BusStreamMetrics",
    "HealthServer",
    "ProviderMetrics",
    "status_result",
]

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
)

BUS_PUBLISH_SECONDS = Histogram(
    "voxcart_bus_publish_seconds", "Time of one pipelined publish round trip.", buckets=LATENCY_BUCKETS
)
BUS_BATCH_SIZE = Histogram(
    "voxcart_bus_batch_size", "Entries per pipelined publish.", buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500)
)
BUS_FRAME_AGE = Histogram(
    "voxcart_bus_frame_age_seconds",
    "Age of an inbound audio frame (gateway arrival to consumer receipt).",
    ["svc"],
    buckets=LATENCY_BUCKETS,
)
STREAM_KINDS = ("audio.in", "listen", "events", "tts", "audio.out", "control", "lifecycle", "other")
"""The ``stream`` label's values: a stream's kind (:func:`voxcart.common.bus.keys.stream_kind`), never its key."""
BUS_LAG_BUCKETS = (*LATENCY_BUCKETS, 10.0, 30.0, 60.0)
"""Latency buckets, then a few for a consumer that fell far behind (a takeover replaying, a full replica)."""
BUS_LAG = Histogram(
    "voxcart_bus_lag_seconds",
    "Age of a bus entry when its consumer handled it: the event's ``ts`` (set by its producer) to the start of "
    "its handling, per consumer service and stream kind.",
    ["svc", "stream"],
    buckets=BUS_LAG_BUCKETS,
)
BUS_BACKLOG = Gauge(
    "voxcart_bus_backlog_entries",
    "Entries waiting for a consumer, per service and stream kind: read from Redis but not yet handled (per-call "
    "streams, summed over replicas), or the consumer group's lag (``lifecycle``: the same value on every replica "
    "of a service, so take the max).",
    ["svc", "stream"],
)
LEASE_ACQUIRED = Counter("voxcart_lease_acquired_total", "Call leases acquired.", ["svc", "reason"])
LEASE_LOST = Counter("voxcart_lease_lost_total", "Call leases lost (renewal failed).", ["svc"])
DEDUPE_HITS = Counter(
    "voxcart_dedupe_hits_total",
    "Duplicates dropped: a retried webhook (``webhook``), an entry whose explicit stream id Redis refused "
    "(``stream_id``).",
    ["scope"],
)
for _scope in ("webhook", "stream_id"):  # exported at 0 from the start
    DEDUPE_HITS.labels(_scope)
DLQ_TOTAL = Counter("voxcart_dlq_total", "Entries sent to a dead-letter stream.", ["svc"])
OWNED_CALLS = Gauge("voxcart_owned_calls", "Calls this replica owns.", ["svc"])
COMMITS = Counter("voxcart_commits_total", "Fenced commits by result.", ["svc", "result"])

PROVIDER_RESULTS = ("ok", "error", "timeout", "rate_limited", "auth", "dropped", "cancelled")
"""How a provider request ended: ``ok``; ``error`` (refused or failed, no better word); ``timeout`` (no answer in
time); ``rate_limited`` (HTTP 429); ``auth`` (HTTP 401/403, a bad key); ``dropped`` (a stream or connection lost
after it had started); ``cancelled`` (we stopped it: barge-in, call end)."""
PROVIDER_REQUESTS = Counter(
    "voxcart_provider_requests_total",
    "Requests to an external provider (a Deepgram connection, an ElevenLabs sentence, an LLM completion, a Twilio "
    "REST call, a PostgreSQL transaction), each counted once when it ends, by result.",
    ["svc", "provider", "result"],
)
PROVIDER_FIRST_RESPONSE = Histogram(
    "voxcart_provider_first_response_seconds",
    "A provider request's start to its first answer (handshake done, first audio, first token, response).",
    ["svc", "provider"],
    buckets=LATENCY_BUCKETS,
)
PROVIDER_FALLBACKS = Counter(
    "voxcart_provider_fallbacks_total",
    "Work a provider failed that its fallback did instead (stt: a call moved to the spare recognizer; tts: a "
    "sentence spoken by the fallback voice; brain: an LLM turn answered by the rules dialog).",
    ["svc", "provider"],
)


def status_result(status: int | None) -> str:
    """The :data:`PROVIDER_RESULTS` value of a refused HTTP request (``None``: no status, a transport error)."""
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    if status in (408, 504):
        return "timeout"
    return "error"


class ProviderMetrics:
    """The series of one provider in one service; creating it exports every result at 0.

    Args:
        svc: the service (``stt``, ``tts``, ``brain``, ``gateway``).
        provider: the provider's name (``deepgram``, ``elevenlabs``, ``llm``, ``twilio``, ``postgres``).
        fallback: whether the provider has a fallback (exports ``voxcart_provider_fallbacks_total`` at 0).
    """

    def __init__(self, svc: str, provider: str, *, fallback: bool = False) -> None:
        self.svc = svc
        self.provider = provider
        self._requests = {result: PROVIDER_REQUESTS.labels(svc, provider, result) for result in PROVIDER_RESULTS}
        self._first = PROVIDER_FIRST_RESPONSE.labels(svc, provider)
        if fallback:
            PROVIDER_FALLBACKS.labels(svc, provider)

    def request(self, result: str) -> None:
        """Count one request that ended with ``result``.

        Raises:
            ValueError: ``result`` is not one of :data:`PROVIDER_RESULTS`.
        """
        counter = self._requests.get(result)
        if counter is None:
            raise ValueError(f"provider result {result!r}: expected one of {', '.join(PROVIDER_RESULTS)}")
        counter.inc()

    def first_response(self, seconds: float) -> None:
        """Observe a request's time to its first answer."""
        self._first.observe(max(0.0, seconds))

    def fallback(self) -> None:
        """Count one piece of work done by the fallback instead."""
        PROVIDER_FALLBACKS.labels(self.svc, self.provider).inc()


class BusStreamMetrics:
    """Lag and backlog of the streams one consumer service reads; creating it exports its kinds at 0.

    Args:
        svc: the consumer (``stt``, ``brain``, ``tts``, ``gateway``).
        kinds: the stream kinds it reads (values of :data:`STREAM_KINDS`).
    """

    def __init__(self, svc: str, kinds: Sequence[str]) -> None:
        unknown = [kind for kind in kinds if kind not in STREAM_KINDS]
        if unknown:
            raise ValueError(f"BusStreamMetrics({svc!r}): unknown stream kinds {unknown}; expected {STREAM_KINDS}")
        self.svc = svc
        self._lag: dict[str, Any] = {}
        self._backlog: dict[str, Any] = {}
        for kind in kinds:
            self._series(kind)

    def _series(self, kind: str) -> tuple[Any, Any]:
        lag = self._lag.get(kind)
        if lag is None:
            kind = kind if kind in STREAM_KINDS else "other"
            lag = self._lag[kind] = BUS_LAG.labels(self.svc, kind)
            self._backlog[kind] = BUS_BACKLOG.labels(self.svc, kind)
        return lag, self._backlog[kind]

    def handled(self, kind: str, produced_ms: float, now_ms: float) -> None:
        """An entry of ``kind`` produced at ``produced_ms`` (epoch ms) is being handled at ``now_ms``."""
        self._series(kind)[0].observe(max(0.0, (now_ms - produced_ms) / 1000))

    def waiting(self, kind: str, delta: int) -> None:
        """``delta`` more (or, negative, fewer) entries of ``kind`` wait for handling."""
        self._series(kind)[1].inc(delta)

    def set_waiting(self, kind: str, entries: int) -> None:
        """``entries`` of ``kind`` wait (a consumer group's lag)."""
        self._series(kind)[1].set(entries)


class HealthServer:
    """Serves ``GET /healthz`` and ``GET /metrics`` for a worker without a web framework.

    Args:
        host: interface to bind.
        port: port to bind; 0 picks a free one (see :attr:`port` after :meth:`start`).
        healthy: returns whether the worker is healthy (Redis reachable, loops running).
    """

    def __init__(self, host: str, port: int, healthy: Callable[[], bool]) -> None:
        self.host = host
        self.port = port
        self._healthy = healthy
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self.host == "::":
            # asyncio sets IPV6_V6ONLY on "::": bind one dual-stack socket so IPv4 probes (a container's
            # HEALTHCHECK on 127.0.0.1) and IPv6 ones (Railway's private network) both reach it
            sock = socket.create_server(("::", self.port), family=socket.AF_INET6, dualstack_ipv6=True)
            self._server = await asyncio.start_server(self._handle, sock=sock)
        else:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            path = request.split(b" ", 2)[1].decode("latin-1") if request.count(b" ") >= 2 else ""
            if path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, generate_latest()
            elif path == "/healthz":
                ok = self._healthy()
                status = "200 OK" if ok else "503 Service Unavailable"
                ctype, body = "application/json", b'{"status":"ok"}' if ok else b'{"status":"unhealthy"}'
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found"
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
