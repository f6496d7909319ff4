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

__all__ = ["LocalRedis", "RedisNotFound", "free_port", "redis_answers", "start_redis"]

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


def start_redis(port: int = 0, appendonly: bool = True) -> LocalRedis:
    """Start ``redis-server`` from PATH on ``port`` (0: a free one) and wait until it answers.

    Raises:
        RedisNotFound: ``redis-server`` is not installed; the message says how to get it.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotFound(INSTALL_HINT)
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="voxcart-redis-"))
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
    shutil.rmtree(directory, ignore_errors=True)
    raise RedisNotFound(f"redis-server on port {port} did not start")
