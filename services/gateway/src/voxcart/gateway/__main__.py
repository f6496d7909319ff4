"""``python -m voxcart.gateway``: run the gateway (uvicorn on ``HOST``:``PORT``); what its container image runs."""

from __future__ import annotations

import sys

from voxcart.common.serve import serve_main

from .app import serve

__all__ = ["main"]


def main() -> int:
    """Run the gateway until SIGTERM/SIGINT; returns the exit status."""
    return serve_main("gateway", serve)


if __name__ == "__main__":
    sys.exit(main())
