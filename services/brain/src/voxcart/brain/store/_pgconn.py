"""Where a PostgreSQL connection string points, and why a connection failed, in words without the password.

Invariants: every message built here names host, port and database (and user for a refused login) and says what
to do; the connection string's password never appears in one, even when libpq echoes the string back.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from voxcart.brain.store._base import StoreError

__all__ = ["Target", "first_line", "mask", "url_password"]


class Target:
    """Where a connection string points (host, port, database, user), for messages without the password."""

    def __init__(self, params: dict[str, Any], password: str) -> None:
        self.params = params
        self.host = str(params.get("host") or params.get("hostaddr") or "the local socket")
        self.port = str(params.get("port") or "5432")
        self.dbname = str(params.get("dbname") or params.get("user") or "(default)")
        self.user = str(params.get("user") or "(default)")
        self._password = password

    @classmethod
    def parse(cls, conninfo: str) -> Target:
        """Parse a URL or ``key=value`` connection string.

        Raises:
            StoreError: it is not one (the message has the password masked).
        """
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.Error as exc:
            masked = mask(str(exc), url_password(conninfo))
            raise StoreError(f"not a valid PostgreSQL connection string: {first_line(masked)}") from None
        return cls(params, str(params.get("password") or ""))

    def __str__(self) -> str:
        return f"at {self.host}:{self.port} (database {self.dbname!r})"

    def explain(self, exc: psycopg.Error) -> str:
        """Why a connection failed, and what to do, naming the server and never the password."""
        text = mask(str(exc), self._password)
        lines = text.rsplit("failed:", 1)[-1].replace("FATAL:", "").splitlines()
        reason = "; ".join(" ".join(line.split()) for line in lines if line.strip())
        lowered = reason.lower()
        where = f"PostgreSQL at {self.host}:{self.port} (database {self.dbname!r}, user {self.user!r})"
        if lowered.startswith("database") and "does not exist" in lowered:
            return f"{where}: {reason}; create it (createdb {self.dbname}) or fix the database name"
        if any(s in lowered for s in ("password authentication", "no password", "role", "pg_hba.conf", "auth")):
            return f"{where} refused the login: {reason}; check the user and password"
        return f"cannot connect to {where}: {reason}"


def url_password(conninfo: str) -> str:
    """The password of a ``scheme://user:password@...`` URL, found even when the URL does not parse."""
    found = re.match(r"^\w+://[^:/@]*:([^@]*)@", conninfo)
    return found.group(1) if found else ""


def mask(text: str, password: str) -> str:
    """``text`` with ``password`` replaced by ``***``."""
    return text.replace(password, "***") if password else text


def first_line(exc: BaseException | str) -> str:
    """The first line of an error's message (libpq adds hints on the following lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
