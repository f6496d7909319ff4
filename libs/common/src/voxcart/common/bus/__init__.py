"""The Redis Streams bus: interface, Redis and in-memory implementations, ownership of calls."""

from .base import Bus, BusError, Entry, Output, PendingEntry, parse_id
from .memory import MemoryBus
from .redis import RedisBus

__all__ = ["Bus", "BusError", "Entry", "MemoryBus", "Output", "PendingEntry", "RedisBus", "parse_id"]
