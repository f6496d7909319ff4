"""Find a Redis to use on one machine, or start one.

Used by ``voxcart up`` and by the test fixtures: a user's fresh machine may have no Redis at all, so the
project starts ``redis-server`` itself (on a free port, AOF on, data in a temporary folder) and says exactly
how to install it when it is not on ``PATH``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LocalRedis",
    "LocalRedisCluster",
    "RedisNotFound",
    "free_port",
    "redis_answers",
    "start_redis",
    "start_redis_cluster",
]

INSTALL_HINT = (
    "no Redis found: set REDIS_URL, or run one on localhost:6379, or install redis-server "
    "(Debian/Ubuntu: `sudo apt-get install -y redis-server`; macOS: `brew install redis`) "
    "so voxcart can start its own."
)


class RedisNotFound(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_answers(host: str = "127.0.0.1", port: int = 6379, timeout: float = 0.3) -> bool:
    """Does something at host:port answer a Redis ``PING``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class LocalRedis:
    """A ``redis-server`` this process started."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis(port: int = 0, appendonly: bool = True, directory: Path | None = None) -> LocalRedis:
    """Start ``redis-server`` from PATH on ``port`` (0: a free one) and wait until it answers.

    ``directory`` (default: a new temporary folder) holds its data: a server started again on the same port and
    folder (after ``process.terminate()``; :meth:`LocalRedis.stop` deletes the folder) reloads its AOF, as a
    restarted production Redis does. A folder given here is not deleted when the start fails.

    Raises:
        RedisNotFound: ``redis-server`` is not installed; the message says how to get it.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotFound(INSTALL_HINT)
    port = port or free_port()
    given = directory is not None
    directory = directory if directory is not None else Path(tempfile.mkdtemp(prefix="voxcart-redis-"))
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)]
    args += ["--appendonly", "yes" if appendonly else "no", "--appendfsync", "everysec", "--tcp-keepalive", "60"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_answers(port=port):
            return LocalRedis(process, port, directory)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    if not given:
        shutil.rmtree(directory, ignore_errors=True)
    raise RedisNotFound(f"redis-server on port {port} did not start")


_SLOTS = 16384


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of ``redis-server`` primaries (no replicas) this process started."""

    processes: list[subprocess.Popen[bytes]]
    ports: list[int]
    directory: Path

    @property
    def url(self) -> str:
        """``redis+cluster://`` on the first node: the bus discovers the others (see ``voxcart.common.bus.cluster``)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis_cluster(nodes: int = 3, timeout: float = 10.0) -> LocalRedisCluster:
    """Start a Redis Cluster of ``nodes`` primaries on free ports and wait until every node reports
    ``cluster_state:ok``.

    The slots are split evenly and assigned directly (``CLUSTER ADDSLOTSRANGE``, ``SET-CONFIG-EPOCH``, ``MEET``):
    what ``redis-cli --cluster create`` does, without its fixed waits. It still takes about 2 s: a fresh primary
    reports ``ok`` only 2 s after it started (Redis' ``CLUSTER_WRITABLE_DELAY``). Each node's cluster bus gets its
    own free port (``cluster-port``), so a client port near 65535 cannot push the bus port out of range. No
    persistence: this is for tests and demos.

    Raises:
        RedisNotFound: ``redis-server`` is not installed (the message says how to get it), or the cluster did not
            form within ``timeout``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotFound(INSTALL_HINT)
    if nodes < 1:
        raise ValueError(f"a cluster needs at least one node, got {nodes}")
    directory = Path(tempfile.mkdtemp(prefix="voxcart-redis-cluster-"))
    ports = _distinct_free_ports(2 * nodes)
    cluster = LocalRedisCluster([], ports[:nodes], directory)
    try:
        for port, bus_port in zip(ports[:nodes], ports[nodes:], strict=True):
            args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            args += ["--dir", str(directory), "--cluster-enabled", "yes", "--cluster-port", str(bus_port)]
            args += ["--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000"]
            cluster.processes.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        for port, process in zip(cluster.ports, cluster.processes, strict=True):
            while not redis_answers(port=port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RedisNotFound(f"redis-server (cluster node) on port {port} did not start")
                time.sleep(0.02)
        _form_cluster(cluster.ports, ports[nodes:], deadline)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _command(port: int, *args: str | int) -> str:
    """Send one command to the server on ``port``; its reply as text (``-ERR ...`` raises)."""
    parts = [str(a).encode() for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(request)
        reply = b""
        while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and not _bulk_complete(reply)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    if reply.startswith(b"-"):
        raise RedisNotFound(f"redis on port {port} refused {' '.join(map(str, args))}: {reply[1:].decode().strip()}")
    head, _, body = reply.partition(b"\r\n")
    return (body[: int(head[1:])] if head.startswith(b"$") else head[1:]).decode()


def _bulk_complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n")
    return len(body) >= int(head[1:]) + 2


def _form_cluster(ports: list[int], bus_ports: list[int], deadline: float) -> None:
    """Give each node an even share of the slots and its own config epoch, introduce them, wait for ``ok``."""
    for index, port in enumerate(ports):
        low = index * _SLOTS // len(ports)
        high = (index + 1) * _SLOTS // len(ports) - 1
        _command(port, "CLUSTER", "ADDSLOTSRANGE", low, high)
        _command(port, "CLUSTER", "SET-CONFIG-EPOCH", index + 1)
    for port, bus_port in zip(ports[1:], bus_ports[1:], strict=True):
        _command(ports[0], "CLUSTER", "MEET", "127.0.0.1", port, bus_port)
    while True:
        infos = [_command(port, "CLUSTER", "INFO") for port in ports]
        if all("cluster_state:ok" in i and f"cluster_known_nodes:{len(ports)}" in i for i in infos):
            return
        if time.monotonic() > deadline:
            states = [line for i in infos for line in i.splitlines() if line.startswith("cluster_state")]
            raise RedisNotFound(f"the local Redis Cluster did not reach cluster_state:ok in time: {states}")
        time.sleep(0.02)
