"""``python -m voxcart.common.healthcheck gateway|worker``: a container's HEALTHCHECK, without curl in the image.

Asks the service in the same container for ``GET /healthz`` on the loopback address: the gateway on ``PORT``,
a worker on ``METRICS_PORT`` (which must then be fixed: 0 picks a free port nobody can guess). Exit status 0 when
it answers 200, else 1 with one line saying what failed.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from .settings import SettingsError, load_settings

__all__ = ["check", "main"]

_TIMEOUT_S = 3.0


def _loopback(host: str) -> str:
    """The loopback address that reaches a server bound to ``host`` (``::`` is dual-stack, see HealthServer)."""
    return "[::1]" if host == "::1" else "127.0.0.1"


def check(kind: str, environ: dict[str, str] | None = None) -> str:
    """Probe the local service's /healthz.

    Args:
        kind: ``gateway`` (``PORT``) or ``worker`` (``METRICS_PORT``).
        environ: the environment to read the settings from (default: the process's).

    Returns:
        ``""`` when healthy, else what went wrong.
    """
    if kind not in ("gateway", "worker"):
        return f"expected 'gateway' or 'worker', got {kind!r}"
    try:
        settings = load_settings(environ)
    except SettingsError as exc:
        return f"bad setting: {exc}"
    port = settings.port if kind == "gateway" else settings.metrics_port
    if port == 0:
        return "METRICS_PORT is 0 (a free port picked at start): set a fixed port to health-check a worker"
    url = f"http://{_loopback(settings.host)}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return "" if status == 200 else f"{url}: HTTP {status}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    problem = check(args[0] if len(args) == 1 else f"{' '.join(args)}")
    if problem:
        print(f"healthcheck: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
