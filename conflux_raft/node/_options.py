"""Options shared by RaftNode and the conflux_redux store: parsed once, each error naming
the option."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._errors import ConfigError

_CHANNELS = ("memory", "redis")
_STORAGES = ("memory", "file")
_CHANNEL_KEYS = {
    "memory": {"name", "namespace"},
    "redis": {"name", "namespace", "url", "maxlen", "block_ms", "read_count", "queue_size",
              "socket_timeout", "connect_timeout", "backoff_max", "health_check_interval",
              "inbox_ttl"},
}


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """Validated options of one node. Times are seconds."""

    id: str
    cluster_size: int | None = None
    members: tuple[str, ...] | None = None
    channel: Mapping[str, Any] = field(default_factory=lambda: {"name": "memory"})
    election_timeout: tuple[float, float] = (0.3, 0.5)
    heartbeat_interval: float = 0.05
    storage: Mapping[str, Any] = field(default_factory=lambda: {"name": "memory"})
    secret: bytes | None = None
    max_pending: int = 10_000
    snapshot_every: int = 10_000  # entries applied between snapshots (with a snapshot fn)

    @property
    def namespace(self) -> str:
        return str(self.channel.get("namespace", "default"))


def parse_options(**opts: Any) -> NodeOptions:
    """Check every option and fill defaults; raise ConfigError (a ValueError) naming it."""
    node_id = opts.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError("id: a non-empty string is required")
    cluster_size, members = opts.get("cluster_size"), opts.get("members")
    if (cluster_size is None) == (members is None):
        raise ConfigError("cluster_size or members: give exactly one")
    if cluster_size is not None and (
        isinstance(cluster_size, bool) or not isinstance(cluster_size, int) or cluster_size < 1
    ):
        raise ConfigError("cluster_size: a positive integer is required")
    member_ids: tuple[str, ...] | None = None
    if members is not None:
        if isinstance(members, (str, bytes)) or not all(
            isinstance(m, str) and m for m in members
        ):
            raise ConfigError("members: a list of non-empty string ids is required")
        member_ids = tuple(members)
        if len(set(member_ids)) != len(member_ids):
            raise ConfigError("members: ids must be distinct")
        if node_id not in member_ids:
            raise ConfigError(f"members: must include this node's id {node_id!r}")
    channel = _channel(opts.get("channel"))
    election = opts.get("election_timeout", (0.3, 0.5))
    if isinstance(election, Mapping):  # the seed's {"min": .., "max": ..}
        election = (election.get("min"), election.get("max"))
    if (
        not isinstance(election, (tuple, list))
        or len(election) != 2
        or not all(_is_number(t) and t > 0 for t in election)
        or election[0] > election[1]
    ):
        raise ConfigError("election_timeout: (min, max) seconds with 0 < min <= max")
    heartbeat = opts.get("heartbeat_interval", 0.05)
    if not _is_number(heartbeat) or not 0 < heartbeat < election[0]:
        raise ConfigError("heartbeat_interval: seconds, above 0 and below election_timeout min")
    secret = opts.get("secret")
    if isinstance(secret, str):
        secret = secret.encode()
    if secret is not None and (not isinstance(secret, bytes) or not secret):
        raise ConfigError("secret: a non-empty str or bytes, or None")
    max_pending = opts.get("max_pending", 10_000)
    if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
        raise ConfigError("max_pending: a positive integer is required")
    snapshot_every = opts.get("snapshot_every", 10_000)
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or (
            snapshot_every < 1):
        raise ConfigError("snapshot_every: a positive integer is required")
    return NodeOptions(
        id=node_id,
        cluster_size=cluster_size,
        members=member_ids,
        channel=channel,
        election_timeout=(float(election[0]), float(election[1])),
        heartbeat_interval=float(heartbeat),
        storage=_storage(opts.get("storage")),
        secret=secret,
        max_pending=max_pending,
        snapshot_every=snapshot_every,
    )


def _channel(channel: Any) -> Mapping[str, Any]:
    if channel is None:
        return {"name": "memory", "namespace": "default"}
    if not isinstance(channel, Mapping) or channel.get("name") not in _CHANNELS:
        raise ConfigError(f"channel: a dict whose name is one of {_CHANNELS}")
    ns = channel.get("namespace", "default")
    if not isinstance(ns, str) or not ns or "}" in ns or "{" in ns:
        raise ConfigError("channel.namespace: a non-empty string without braces")
    if channel["name"] == "redis" and not isinstance(channel.get("url"), str):
        raise ConfigError("channel.url: the redis channel needs a redis://, rediss:// or "
                          "redis+sentinel:// URL string (none is assumed)")
    unknown = set(channel) - _CHANNEL_KEYS[channel["name"]]
    if unknown:
        raise ConfigError(f"channel: unknown option(s) {sorted(unknown)} for {channel['name']!r}")
    return {**channel, "namespace": ns}


def _storage(storage: Any) -> Mapping[str, Any]:
    if storage is None:
        return {"name": "memory"}
    if not isinstance(storage, Mapping) or storage.get("name") not in _STORAGES:
        raise ConfigError(f"storage: a dict whose name is one of {_STORAGES}")
    if storage["name"] == "file" and not isinstance(storage.get("path"), str):
        raise ConfigError("storage.path: a directory path string is required")
    return dict(storage)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
