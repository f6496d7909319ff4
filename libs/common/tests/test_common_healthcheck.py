"""A worker's health server bound to ``::`` answers on IPv4 and IPv6 loopback, and the container HEALTHCHECK
(``python -m voxcart.common.healthcheck``) reports its state through the exit status."""

from __future__ import annotations

import asyncio
import socket

import pytest

from voxcart.common.healthcheck import check, main
from voxcart.common.metrics import HealthServer


async def _get(host: str, port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    return data


@pytest.mark.skipif(not socket.has_dualstack_ipv6(), reason="this kernel has no dual-stack IPv6 sockets")
async def test_common_health_server_on_ipv6_any_is_dual_stack() -> None:
    server = HealthServer("::", 0, lambda: True)
    await server.start()
    try:
        for host in ("127.0.0.1", "::1"):
            assert (await _get(host, server.port, "/healthz")).startswith(b"HTTP/1.1 200 OK"), host
    finally:
        await server.close()


async def test_common_healthcheck_exit_status_follows_healthz() -> None:
    healthy = True
    server = HealthServer("0.0.0.0", 0, lambda: healthy)
    await server.start()
    env = {"METRICS_PORT": str(server.port), "PORT": str(server.port)}
    try:
        assert await asyncio.to_thread(check, "worker", env) == ""
        assert await asyncio.to_thread(check, "gateway", env) == ""
        healthy = False
        problem = await asyncio.to_thread(check, "worker", env)
        assert problem.endswith("/healthz: HTTP 503"), problem
    finally:
        await server.close()
    refused = await asyncio.to_thread(check, "worker", env)
    assert refused.startswith(f"http://127.0.0.1:{server.port}/healthz: "), refused


def test_common_healthcheck_refuses_what_it_cannot_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert "METRICS_PORT is 0" in check("worker", {})
    assert "bad setting: PORT=" in check("gateway", {"PORT": "http"})
    assert main(["stt"]) == 1
    assert "expected 'gateway' or 'worker', got 'stt'" in capsys.readouterr().err
