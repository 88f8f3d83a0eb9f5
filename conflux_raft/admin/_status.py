"""Reading a cluster's status from Redis: the keys its nodes publish, one row per node,
and the disagreements between them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from .._errors import ConfigError, Unreachable
from ..transport import connect, describe, members_key, reporters_key, status_key

__all__ = ["ClusterView", "cluster_view", "read_cluster", "where"]


@dataclass(frozen=True)
class ClusterView:
    """What the nodes of `namespace` published, as read at `at` (wall clock).

    `nodes`: one row per reporting node, sorted by id (see `cluster_view` for the keys);
    `members`: the ids that should report; `problems`: one sentence each."""

    namespace: str
    nodes: list[dict[str, Any]]
    members: list[str]
    problems: list[str]
    at: float

    def as_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "at": self.at, "members": self.members,
                "problems": self.problems, "nodes": self.nodes}


def where(url: str) -> str:
    """host:port (or the socket path) of `url`, never its password; ConfigError if bad."""
    client = connect(url, 1.0, 1.0)
    try:
        return describe(client)
    finally:
        client.close()


def read_cluster(url: str, namespace: str, timeout: float = 2.0) -> ClusterView:
    """The status keys of `namespace` at the Redis of `url`: the ids in its reporters
    set, then their keys and the members list (all in the namespace's one slot).
    ConfigError for a bad URL or namespace; Unreachable when Redis does not answer. A
    namespace where no node reports gives a view without nodes."""
    if not isinstance(namespace, str) or not namespace:
        raise ConfigError(f"namespace must be a non-empty str, got {namespace!r}")
    client = connect(url, timeout, timeout)
    try:
        reporters = client.zrange(reporters_key(namespace), 0, -1)
        ids = sorted(_text(i) for i in reporters if isinstance(i, bytes | str))
        with client.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.get(status_key(namespace, node_id))
            pipe.lrange(members_key(namespace), 0, -1)
            *values, listed = pipe.execute()
    except (redis.RedisError, OSError) as exc:
        raise _unreachable(describe(client), exc) from None
    finally:
        client.close()
    published = [(node_id, value) for node_id, value in zip(ids, values, strict=True)
                 if value is not None]  # expired: the node is gone
    return cluster_view(namespace, published, [_text(m) for m in listed], time.time())


def cluster_view(namespace: str, published: Iterable[tuple[str, Any]],
                 listed: Sequence[str] = (), at: float | None = None) -> ClusterView:
    """The view of what was published: (key's node id, the JSON as bytes or a dict).

    Each row: id, role, term, leader, commit_index, applied_index, last_index,
    snapshot_index, lag (entries behind the leader: see `_add_lag`),
    last_heard (seconds since it published), connected, dropped, malformed (from its
    transport), voters, progress, tail, transport (the whole dict), and whatever else the
    node published (pending, published_at, ...). `listed` is the namespace's member list,
    if any: its first len(voters) ids are the members; without it, the voters the nodes
    report are."""
    now = time.time() if at is None else at
    problems: list[str] = []
    statuses: list[Mapping[str, Any]] = []
    for key_id, value in published:
        status = _parse(value)
        if status is None:
            problems.append(f"{key_id} published something that is not a node's status")
        else:
            statuses.append({"id": key_id, **status})
    rows = sorted((_row(s, now) for s in statuses), key=lambda r: str(r["id"]))
    _add_lag(rows)
    members = _members(rows, listed)
    problems[:0] = _problems(rows, members)
    return ClusterView(namespace, rows, members, problems, now)


def _parse(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, bytes | str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return None
    return value if isinstance(value, Mapping) else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _add_lag(rows: Sequence[dict[str, Any]]) -> None:
    """Each row's lag: entries the leader has committed that it does not know the node
    holds (its match index), from the leader's one publication, so that nodes published
    at other moments do not skew it; the leader's own is what it has not yet applied.
    With no leader reporting: the highest commit_index reported minus the node's
    applied_index."""
    leaders = [r for r in rows if r["role"] == "leader"]
    leader = max(leaders, key=lambda r: r["term"], default=None)
    top = max((r["commit_index"] for r in rows), default=0)
    for r in rows:
        if leader is None:
            behind = top - r["applied_index"]
        elif r is leader:
            behind = r["commit_index"] - r["applied_index"]
        elif r["id"] in leader["progress"]:
            behind = leader["commit_index"] - _int(leader["progress"][r["id"]])
        else:
            behind = leader["commit_index"] - r["applied_index"]
        r["lag"] = max(behind, 0)


def _row(s: Mapping[str, Any], at: float) -> dict[str, Any]:
    transport = s.get("transport")
    transport = dict(transport) if isinstance(transport, Mapping) else {}
    published_at = s.get("published_at")
    heard = at - published_at if isinstance(published_at, int | float) else 0.0
    voters = s.get("voters")
    progress = s.get("progress")
    tail = s.get("tail")
    return {
        **s,  # what else the node published (pending, published_at, ...), then the keys
        "id": str(s["id"]),
        "role": str(s.get("role", "?")),
        "term": _int(s.get("term")),
        "leader": s.get("leader") if isinstance(s.get("leader"), str) else None,
        "commit_index": _int(s.get("commit_index")),
        "applied_index": _int(s.get("applied_index")),
        "last_index": _int(s.get("last_index")),
        "snapshot_index": _int(s.get("snapshot_index")),
        "lag": 0,  # set by _add_lag, once every row is read
        "last_heard": max(heard, 0.0),
        "connected": transport.get("connected") is True,
        "dropped": _int(transport.get("dropped")),
        "malformed": _int(transport.get("malformed")),
        "voters": [str(v) for v in voters] if isinstance(voters, list) else [],
        "progress": dict(progress) if isinstance(progress, Mapping) else {},
        "tail": list(tail) if isinstance(tail, list) else [],
        "transport": transport,
    }


def _members(rows: Sequence[Mapping[str, Any]], listed: Sequence[str]) -> list[str]:
    size = max((len(r["voters"]) for r in rows), default=0)
    if listed:  # discovery's list: the first cluster_size ids registered are the voters
        return list(listed[:size] if size else listed)
    return sorted({v for r in rows for v in r["voters"]})


def _problems(rows: Sequence[Mapping[str, Any]], members: Sequence[str]) -> list[str]:
    out: list[str] = []
    leaders = sorted((r["term"], r["id"]) for r in rows if r["role"] == "leader")
    by_term: dict[int, list[str]] = defaultdict(list)
    for term, node_id in leaders:
        by_term[term].append(node_id)
    for term, claimants in by_term.items():
        if len(claimants) > 1:
            out.append(f"{_claim(claimants)} to lead term {term}: two leaders in one term")
    if len(by_term) > 1:
        terms = ", ".join(str(t) for t, _ in leaders)
        out.append(f"{_claim([i for _, i in leaders])} to lead (terms {terms}): the older "
                   "has not yet heard of the newer term")
    if rows and not leaders:
        out.append("no node claims to lead (an election, or no quorum)")
    ids = {r["id"] for r in rows}
    out.extend(f"{m} is not reporting (a member with no status in Redis: stopped, or cut "
               "off from Redis)" for m in members if m not in ids)
    if members:
        out.extend(f"{i} reports but is not a member ({', '.join(members)})"
                   for i in sorted(ids) if i not in members)
    sets: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for r in rows:
        if r["voters"]:
            sets[tuple(sorted(r["voters"]))].append(r["id"])
    if len(sets) > 1:
        said = "; ".join(f"{', '.join(who)}: {', '.join(voters)}"
                         for voters, who in sorted(sets.items(), key=lambda kv: kv[1]))
        out.append(f"nodes disagree on the voters ({said})")
    return out


def _claim(ids: Sequence[str]) -> str:
    if len(ids) == 2:
        return f"{ids[0]} and {ids[1]} both claim"
    return f"{', '.join(ids[:-1])} and {ids[-1]} claim"


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _unreachable(where: str, exc: BaseException) -> Unreachable:
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return Unreachable(f"no Redis at {where}: {exc}")
    return Unreachable(f"Redis at {where} refused: {exc}")
