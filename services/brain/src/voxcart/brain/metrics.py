"""Brain's reply-path metrics, in a module of their own because both reply paths (the rules dialog in ``worker``
and the model's streamed replies in ``llm_replies``) record them."""

from __future__ import annotations

from prometheus_client import Histogram

from voxcart.common.metrics import LATENCY_BUCKETS

__all__ = ["DECISION_SECONDS"]

DECISION_SECONDS = Histogram(
    "voxcart_brain_decision_seconds", "From a final transcript read to its reply committed.", buckets=LATENCY_BUCKETS
)
