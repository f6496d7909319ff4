"""Prometheus metrics shared by every service, and a tiny /healthz + /metrics server for the workers.

Label sets are bounded: a service name, a reason from a fixed list, a stream *kind* (``audio.in``), never a
CallSid.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "BUS_BATCH_SIZE",
    "BUS_BACKLOG",
    "BUS_FRAME_AGE",
    "BUS_PUBLISH_SECONDS",
    "COMMITS",
    "DEDUPE_HITS",
    "DLQ_TOTAL",
    "LATENCY_BUCKETS",
    "LEASE_ACQUIRED",
    "LEASE_LOST",
    "OWNED_CALLS",
    "HealthServer",
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
BUS_BACKLOG = Gauge("voxcart_bus_backlog_entries", "Entries read but not yet processed.", ["svc"])
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
