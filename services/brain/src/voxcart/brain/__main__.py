"""``python -m voxcart.brain``: run one brain worker replica (health and metrics on ``METRICS_PORT``); what its
container image runs."""

from __future__ import annotations

import asyncio
import sys

from voxcart.common.serve import serve_main
from voxcart.common.settings import Settings

from .app import run

__all__ = ["main"]


def _serve(settings: Settings) -> None:
    asyncio.run(run(settings))


def main() -> int:
    """Run the replica until SIGTERM/SIGINT (it drains its calls first); returns the exit status."""
    return serve_main("brain", _serve)


if __name__ == "__main__":
    sys.exit(main())
