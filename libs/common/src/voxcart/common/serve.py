"""What every service process does before it serves: read the settings, set up logging, then run.

Each service package has a ``__main__`` built on :func:`serve_main`, so ``python -m voxcart.<service>`` runs one
service with only that service's distribution installed (its container image holds nothing else); ``voxcart serve
<service>`` (libs/cli, which depends on every service) calls the same ``main``.

Invariants:
- A bad setting stops the process before anything starts, with a one-line message naming the variable.
- Settings are read once, here; the service gets them as an argument.
"""

from __future__ import annotations

from collections.abc import Callable

from .logs import setup_logging
from .settings import Settings, SettingsError, load_settings

__all__ = ["serve_main"]


def serve_main(service: str, serve: Callable[[Settings], None]) -> int:
    """Load the settings, configure logging for ``service`` and run ``serve`` until it returns.

    Args:
        service: the service's name (``gateway``, ``stt``, ``brain``, ``tts``), shown in text logs and errors.
        serve: runs the service with the settings; returns when the service has stopped.

    Returns:
        The process exit status (0).

    Raises:
        SystemExit: a setting is missing or malformed (the message names it).
    """
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"voxcart {service}: bad setting: {exc}") from None
    setup_logging(settings.log_level, settings.log_format, service)
    serve(settings)
    return 0
