"""Find a PostgreSQL to use on one machine, or start a throwaway one (the PostgreSQL twin of ``localredis``).

Used by the test fixtures: a machine may have no PostgreSQL running, so a server is started from the installed
binaries (``initdb`` and ``postgres`` on ``PATH`` or in ``/usr/lib/postgresql/<version>/bin``) in a temporary
folder, on a free port, with trust authentication and durability off (a scratch server, never real data),
and removed by :meth:`LocalPostgres.stop`. ``initdb`` refuses to run as root: as root the server runs as the
``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from voxcart.common.localredis import free_port

__all__ = ["LocalPostgres", "PostgresNotFound", "find_binaries", "postgres_answers", "start_postgres"]

INSTALL_HINT = (
    "no PostgreSQL binaries found (initdb, postgres): install them "
    "(Debian/Ubuntu: `sudo apt-get install -y postgresql`; macOS: `brew install postgresql`) "
    "or point VOXCART_TEST_POSTGRES_URL at a server"
)


class PostgresNotFound(RuntimeError):
    """No PostgreSQL could be started here; the message says why and what to install."""


def postgres_answers(conninfo: str, timeout: int = 2) -> bool:
    """Does a PostgreSQL server accept a login with ``conninfo``?"""
    try:
        with psycopg.connect(conninfo, connect_timeout=timeout):
            return True
    except psycopg.Error:
        return False


def find_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres``: ``PATH`` first, then the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return Path(initdb).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    for folder in reversed(versions):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "postgres").exists():
            return Path(folder)
    return None


@dataclass
class LocalPostgres:
    """A ``postgres`` server this process started."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        """The superuser's connection URL (database ``postgres``)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Shut the server down (fast mode) and delete its folder."""
        if self.process.poll() is None:
            self.process.send_signal(2)  # SIGINT: "fast" shutdown, no waiting for clients
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(port: int = 0, timeout: float = 30.0) -> LocalPostgres:
    """Create a cluster in a temporary folder and start ``postgres`` on ``port`` (0: a free one).

    Returns:
        The running server; call :meth:`LocalPostgres.stop` when done.

    Raises:
        PostgresNotFound: no binaries, no user to run them as (when root), or the server did not start (the
            message includes the end of its log).
    """
    binaries = find_binaries()
    if binaries is None:
        raise PostgresNotFound(INSTALL_HINT)
    port = port or free_port()
    directory = Path(tempfile.mkdtemp(prefix="voxcart-pg-"))
    data, log = directory / "data", directory / "server.log"
    user: int | None = None
    group: int | None = None
    if os.geteuid() == 0:
        account = _unprivileged_account()
        os.chown(directory, account.pw_uid, account.pw_gid)
        user, group = account.pw_uid, account.pw_gid
    extra_groups: list[int] | None = [] if user is not None else None
    try:
        subprocess.run(
            [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            cwd=directory,
            user=user,
            group=group,
            extra_groups=extra_groups,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        raise PostgresNotFound(f"initdb failed: {exc.stderr.decode(errors='replace').strip()[-500:]}") from None
    args = [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(directory)]
    for setting in ("listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off", "full_page_writes=off"):
        args += ["-c", setting]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=directory, user=user, group=group, extra_groups=extra_groups
        )
    server = LocalPostgres(process, port, directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if postgres_answers(server.url, timeout=1):
            return server
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-500:] if log.exists() else ""
    server.stop()
    raise PostgresNotFound(f"postgres on port {port} did not start: {tail.strip()}")


def _unprivileged_account() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresNotFound("running as root, and initdb refuses root: create a 'postgres' user to run it as")
