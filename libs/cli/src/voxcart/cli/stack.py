"""Run the whole stack as local processes: Redis (if needed), the gateway, and stt, brain and tts workers.

Used by ``voxcart up``, ``voxcart demo`` and the end-to-end tests, so the tests exercise exactly what a user
runs. Each service is its own process (``voxcart serve <svc>``), as in production.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO

import httpx

from voxcart.cli.calling import DEV_AUTH_TOKEN
from voxcart.common.localredis import INSTALL_HINT, LocalRedis, RedisNotFound, free_port, redis_answers, start_redis

__all__ = ["Stack", "StackError", "resolve_redis"]

SERVICES = ("gateway", "stt", "brain", "tts")


class StackError(RuntimeError):
    pass


def resolve_redis(redis_url: str) -> tuple[str, LocalRedis | None]:
    """``REDIS_URL`` if set, else a Redis answering on localhost:6379, else one started from PATH."""
    if redis_url:
        return redis_url, None
    if redis_answers("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0", None
    try:
        server = start_redis()
    except RedisNotFound as exc:
        raise StackError(str(exc) or INSTALL_HINT) from exc
    return server.url, server


@dataclass
class Stack:
    """The local stack's processes.

    Args:
        redis_url: Redis to use ("" = find or start one).
        port: the gateway's port (0 = a free one).
        replicas: how many processes of each worker service.
        env: extra environment for every service.
        quiet: send service logs to a file instead of the terminal.
    """

    redis_url: str = ""
    port: int = 8080
    replicas: Mapping[str, int] = field(default_factory=lambda: {"stt": 1, "brain": 1, "tts": 1})
    env: Mapping[str, str] = field(default_factory=dict)
    log_path: str | None = None
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    metrics_ports: dict[str, list[int]] = field(default_factory=dict)
    """Each worker process's ``METRICS_PORT`` (a free port picked per process), in :attr:`processes` order."""
    _redis: LocalRedis | None = None
    _log: IO[bytes] | None = None

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.redis_url, self._redis = resolve_redis(self.redis_url)
        if self.port == 0:
            self.port = free_port()
        self._log = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        self.spawn("gateway")
        for svc in ("stt", "brain", "tts"):
            for _ in range(self.replicas.get(svc, 1)):
                self.spawn(svc)
        self.wait_ready(timeout)

    def spawn(self, svc: str, port: int | None = None) -> subprocess.Popen[bytes]:
        """Start one more process of ``svc``; a gateway serves on ``port`` (another replica), else on :attr:`port`."""
        index = len(self.processes.get(svc, []))
        env = {**os.environ, **self.env, "REDIS_URL": self.redis_url, "PORT": str(port or self.port)}
        if not env.get("TWILIO_AUTH_TOKEN"):
            env["TWILIO_AUTH_TOKEN"] = DEV_AUTH_TOKEN
        if not env.get("RATE_LIMIT_CALLS"):  # demos and tests place many simulated calls from one number
            env["RATE_LIMIT_CALLS"] = "0"
        env["REPLICA_ID"] = f"{svc}-{index}-{os.getpid()}"
        env.setdefault("LOG_FORMAT", "text")
        if svc != "gateway":
            env["METRICS_PORT"] = str(free_port())
            self.metrics_ports.setdefault(svc, []).append(int(env["METRICS_PORT"]))
        out: IO[bytes] | None = self._log
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            [sys.executable, "-m", "voxcart.cli.main", "serve", svc],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT if out is not None else None,
        )
        self.processes.setdefault(svc, []).append(proc)
        return proc

    def metrics_targets(self) -> dict[str, list[str]]:
        """``host:port`` of every live process's ``/metrics`` by service: the gateway on its HTTP port."""
        targets = {"gateway": [f"127.0.0.1:{self.port}"]}
        for svc, ports in self.metrics_ports.items():
            procs = self.processes[svc]
            targets[svc] = [f"127.0.0.1:{port}" for port, proc in zip(ports, procs, strict=True) if proc.poll() is None]
        return targets

    def wait_ready(self, timeout: float) -> None:
        """Wait for the gateway's /healthz and for every worker to have joined its consumer group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for svc, procs in self.processes.items():
                for proc in procs:
                    if proc.poll() is not None:
                        raise StackError(f"{svc} exited with code {proc.returncode} while starting")
            try:
                r = httpx.get(f"{self.gateway_url}/healthz", timeout=1.0)
                if r.status_code == 200 and r.json().get("workers_ready"):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise StackError(f"the stack did not become ready within {timeout:.0f} s")

    def wait_gateway(self, port: int, timeout: float = 30.0) -> None:
        """Wait until the gateway on ``port`` answers ``/healthz`` (a replica started with ``spawn(port=...)``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise StackError(f"the gateway on port {port} did not answer within {timeout:.0f} s")

    def kill(self, svc: str, index: int = 0, sig: int = signal.SIGKILL) -> None:
        proc = self.processes[svc][index]
        proc.send_signal(sig)
        proc.wait(10)

    def stop(self) -> None:
        everything = [p for procs in self.processes.values() for p in procs]
        for proc in everything:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in everything:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._redis is not None:
            self._redis.stop()
        if self._log is not None:
            self._log.close()
