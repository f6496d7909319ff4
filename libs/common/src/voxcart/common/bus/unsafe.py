"""**Tests only**: a bus with some of its guards switched off, so the failure suite can prove that it notices.

``VOXCART_UNSAFE_DISABLE`` (a comma-separated list; :attr:`Settings.unsafe_disabled`) makes every worker of the
process (stt, brain, tts) run on an :class:`UnsafeBus`, which removes:

- ``lease``, exclusive ownership. Acquiring a lease another replica holds succeeds and *joins* it: the replica then
  renews, commits and releases with the holder's value, and the orphan sweep sees every lease as free. So every
  replica of a service owns every active call at once, and the fenced commit cannot tell them apart. (A plain ``SET``
  instead of ``SET NX`` would not do it: the replica whose value was overwritten is fenced out at its next commit
  and drops the call, which is the fence doing its job, not two owners.)
- ``fence``, the commit's lease check. A replica whose lease lapsed or was taken over still commits (a zombie's late
  writes land).
- ``dedupe``: explicit stream ids become auto ids (a replayed or re-sent entry is appended again instead of being
  refused as not above the stream's top), and dedupe keys (``set_nx``) always report a first time.

Invariants: nothing here is used unless the setting names a guard; the setting is refused with ``ENV=production``
(:class:`~voxcart.common.settings.SettingsError`), and a worker running on this bus logs a warning naming what is
off. It wraps a single Redis only (:class:`RedisBus`), sharing its client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .base import Bus, Output
from .redis import _COMMIT, RedisBus

__all__ = ["UnsafeBus", "without_guards"]

log = logging.getLogger("voxcart.common.bus.unsafe")

_FENCE_CHECK = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end\n"
_UNFENCED = _COMMIT.replace(_FENCE_CHECK, "", 1)


def without_guards(bus: Bus, off: frozenset[str]) -> Bus:
    """``bus`` itself when ``off`` is empty, else an :class:`UnsafeBus` over it (with a warning in the log).

    Raises:
        ValueError: ``bus`` is not a single-Redis :class:`RedisBus`.
    """
    if not off:
        return bus
    if type(bus) is not RedisBus:
        raise ValueError(f"VOXCART_UNSAFE_DISABLE works on a single Redis (RedisBus), not on {type(bus).__name__}")
    log.warning("TEST ONLY: bus guards switched off: %s (VOXCART_UNSAFE_DISABLE)", ", ".join(sorted(off)))
    return UnsafeBus(bus, off)


class UnsafeBus(RedisBus):
    """A :class:`RedisBus` (sharing ``bus``'s client) without the guards named in ``off``; see the module doc.

    Raises:
        ValueError: an unknown guard name, or the commit script no longer starts with the lease check this
            removes for ``fence``.
    """

    def __init__(self, bus: RedisBus, off: frozenset[str]) -> None:
        unknown = off - {"lease", "fence", "dedupe"}
        if unknown:
            raise ValueError(f"UnsafeBus: unknown guards {sorted(unknown)}; expected lease, fence, dedupe")
        super().__init__(bus.url, client=bus.redis)
        self.off = off
        self._joined: dict[tuple[str, str], str] = {}
        """(lease key, our value) -> the holder's value we joined (``lease`` off)."""
        if "fence" in off:
            if _UNFENCED == _COMMIT:
                raise ValueError("UnsafeBus: the commit script's lease check was not found; update _FENCE_CHECK")
            self._commit = self.redis.register_script(_UNFENCED)

    def _value(self, key: str, value: str) -> str:
        return self._joined.get((key, value), value)

    def _outputs(self, outputs: Sequence[Output]) -> list[Output]:
        if "dedupe" not in self.off:
            return list(outputs)
        return [Output(o.stream, o.data, "*", o.maxlen) if o.id != "*" else o for o in outputs]

    # -- lease ---------------------------------------------------------------------------------------------
    async def acquire_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        if await super().acquire_lease(key, value, ttl_ms):
            return True
        if "lease" not in self.off:
            return False
        holder: Any = await self._call(self.redis.get(key))
        if holder is None:  # released meanwhile: take it for real
            return await super().acquire_lease(key, value, ttl_ms)
        self._joined[(key, value)] = holder.decode() if isinstance(holder, bytes) else str(holder)
        return True

    async def renew_lease(self, key: str, value: str, ttl_ms: int) -> bool:
        return await super().renew_lease(key, self._value(key, value), ttl_ms)

    async def renew_leases(self, leases: Sequence[tuple[str, str]], ttl_ms: int) -> list[bool]:
        return await super().renew_leases([(key, self._value(key, value)) for key, value in leases], ttl_ms)

    async def release_lease(self, key: str, value: str) -> bool:
        return await super().release_lease(key, self._joined.pop((key, value), value))

    async def leases_exist(self, keys: Sequence[str]) -> list[bool]:
        if "lease" in self.off:
            return [False] * len(keys)
        return await super().leases_exist(keys)

    # -- fence and dedupe ------------------------------------------------------------------------------------
    async def commit(
        self,
        lease_key: str,
        lease_value: str,
        outputs: Sequence[Output],
        checkpoint_key: str,
        checkpoint: Mapping[str, str],
        state_key: str | None = None,
        state: Mapping[str, bytes] | None = None,
        ttl_ms: int = 0,
        ttl_anchor: str | None = None,
    ) -> bool:
        return await super().commit(
            lease_key,
            self._value(lease_key, lease_value),
            self._outputs(outputs),
            checkpoint_key,
            checkpoint,
            state_key,
            state,
            ttl_ms,
            ttl_anchor,
        )

    async def publish(self, outputs: Sequence[Output], ttl_ms: int = 0) -> list[str | None]:
        return await super().publish(self._outputs(outputs), ttl_ms)

    async def set_nx(self, key: str, value: str, ttl_ms: int) -> bool:
        first = await super().set_nx(key, value, ttl_ms)
        return True if "dedupe" in self.off else first
