"""Connecting to Redis: one server, or a Redis Cluster.

`redis://host:port/db` (or `rediss://`) names one server. `redis+cluster://host:port,host:port`
(or `rediss+cluster://`, optionally with `:password@`) names nodes of a Redis Cluster to
discover it from; the client then sends each command to the node that owns its key's slot.

The code above this module is the same for both: every script's keys share one hash tag (a
site-day, or a shard of idempotency records), so each script runs whole on one node.
"""

from __future__ import annotations

from typing import TypeAlias
from urllib.parse import quote, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection

RedisClient: TypeAlias = Redis | RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
CLUSTER_CONNECTIONS_PER_NODE = 10_000  # Redis's own default `maxclients`


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The host and port of each node a cluster URL names."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for host_port in hosts.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a cluster node must be host:port, not {host_port!r}")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


def connect(url: str) -> RedisClient:
    """A client of the server or cluster the URL names (answers decoded to str)."""
    if not is_cluster(url):
        return Redis.from_url(url, decode_responses=True)
    parts = urlsplit(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=CLUSTER_SCHEMES[parts.scheme],
        decode_responses=True,
        # Per node. redis-py's default (100) refuses the 101st request in flight at once with
        # MaxConnectionsError instead of waiting, and the client then refreshes the cluster's
        # topology, closing connections other requests are using (they answer 500). A rush
        # has thousands in flight; a single Redis's pool has no such limit either.
        max_connections=CLUSTER_CONNECTIONS_PER_NODE,
    )


def limits_uri(cluster: RedisCluster) -> str:
    """The cluster a client was made for, as a storage URI of the `limits` library (which
    makes its own client from it)."""
    options = cluster.get_connection_kwargs()
    scheme = (
        "rediss+cluster" if options.get("connection_class") is SSLConnection else "redis+cluster"
    )
    password = options.get("password")
    login = f":{quote(password, safe='')}@" if password else ""
    nodes = ",".join(
        f"{node.host}:{node.port}" for node in cluster.nodes_manager.startup_nodes.values()
    )
    return f"async+{scheme}://{login}{nodes}"
