"""The Redis Streams bus: interface, Redis (one server or a Cluster) and in-memory buses, ownership of calls."""

from .base import Bus, BusError, Entry, Output, PendingEntry, parse_id
from .cluster import ClusterBus
from .connect import open_bus
from .memory import MemoryBus
from .redis import RedisBus

__all__ = [
    "Bus",
    "BusError",
    "ClusterBus",
    "Entry",
    "MemoryBus",
    "Output",
    "PendingEntry",
    "RedisBus",
    "open_bus",
    "parse_id",
]
