"""Open the bus a deployment names: one Redis, or a Redis Cluster.

A Cluster is named by the URL's scheme (``redis+cluster://``, ``rediss+cluster://``) or by ``REDIS_CLUSTER=true``
beside a plain ``redis://`` URL (a managed Cluster's configuration endpoint, or a platform's reference variable
that cannot be re-schemed). redis-py's own URL parser knows neither: the choice is made here, once.
"""

from __future__ import annotations

from .cluster import ClusterBus, is_cluster_url
from .redis import RedisBus

__all__ = ["open_bus"]


def open_bus(url: str, cluster: bool = False) -> RedisBus:
    """A :class:`ClusterBus` when ``cluster`` is set or ``url`` has a ``+cluster`` scheme, else a :class:`RedisBus`.

    Raises:
        ValueError: a Cluster URL that names a database other than 0, or a scheme that is not Redis.
    """
    if cluster or is_cluster_url(url):
        return ClusterBus(url)
    return RedisBus(url)
