"""The same behaviour over both channels: the in-process hub and a real redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from typing import Any

import pytest
from _wait import wait_for

from conflux_raft import ClusterFull, Entry, Message, MsgType, Overloaded, RaftNode, encode

FAST = {"election_timeout": (0.2, 0.4), "heartbeat_interval": 0.04}


@pytest.fixture(params=["memory", "redis"])
def channel(request: pytest.FixtureRequest, namespace: str) -> dict[str, Any]:
    if request.param == "memory":
        return {"name": "memory", "namespace": namespace}
    url = request.getfixturevalue("redis_url")
    return {"name": "redis", "url": url, "namespace": namespace}


@pytest.fixture
def make_cluster(channel: dict[str, Any]) -> Iterator[Callable[..., list[RaftNode]]]:
    made: list[RaftNode] = []
    logs: dict[str, list[tuple[int, Any]]] = {}

    def make(n: int, **opts: Any) -> list[RaftNode]:
        ids = [f"c{i}" for i in range(n)]
        for i in ids:
            node = RaftNode(id=i, members=ids, channel=channel, autostart=False,
                            **{**FAST, **opts})
            logs[i] = []
            node.on("committed", lambda d, x, log=logs[i]: log.append((x, d)))
            node.start()
            made.append(node)
        return made

    make.logs = logs  # type: ignore[attr-defined]
    yield make
    for node in made:
        node.close()


def one_leader(nodes: list[RaftNode]) -> RaftNode:
    wait_for(lambda: sum(n.is_leader() for n in nodes) == 1
             and len({n.leader_id for n in nodes}) == 1, what="one agreed leader")
    return next(n for n in nodes if n.is_leader())


def replicas_agree(nodes: list[RaftNode], logs: dict[str, list[tuple[int, Any]]]) -> None:
    wait_for(lambda: len({n.commit_index for n in nodes}) == 1
             and len({len(logs[n.id]) for n in nodes}) == 1, what="replicas to converge")
    first = logs[nodes[0].id]
    assert all(logs[n.id] == first for n in nodes)


@pytest.mark.parametrize("size", [3, 5])
def test_cluster_replicates(make_cluster: Callable[..., list[RaftNode]], size: int) -> None:
    nodes = make_cluster(size)
    one_leader(nodes)
    futs = [n.append({"from": n.id, "k": k}) for k in range(30) for n in nodes]
    indexes = [f.result(20) for f in futs]
    assert len(set(indexes)) == len(futs)
    replicas_agree(nodes, make_cluster.logs)  # type: ignore[attr-defined]
    assert len(make_cluster.logs[nodes[0].id]) == 30 * size  # type: ignore[attr-defined]


def test_overload_is_bounded_and_every_future_settles(
        make_cluster: Callable[..., list[RaftNode]]) -> None:
    nodes = make_cluster(3, max_pending=2_000)
    one_leader(nodes)
    source = next(n for n in nodes if not n.is_leader())
    futs: list[Future[int]] = []
    peak = 0
    for k in range(50_000):
        futs.append(source.append(k))
        if k % 1000 == 0:
            peak = max(peak, source.status()["pending"])
    _, not_done = wait(futs, timeout=120)
    assert not not_done, f"{len(not_done)} futures never settled"
    errors = [f.exception() for f in futs if f.exception() is not None]
    assert all(isinstance(e, Overloaded) for e in errors)
    committed = len(futs) - len(errors)
    assert committed >= 2_000 and peak <= 2_000
    replicas_agree(nodes, make_cluster.logs)  # type: ignore[attr-defined]
    assert len(make_cluster.logs[nodes[0].id]) == committed  # type: ignore[attr-defined]
    values = [d for _, d in make_cluster.logs[nodes[0].id]]  # type: ignore[attr-defined]
    assert values == sorted(values)  # one node's appends commit in the order it made them


def test_forged_and_unsigned_messages_are_rejected(redis_url: str, namespace: str,
                                                   redis_server: Any) -> None:
    chan = {"name": "redis", "url": redis_url, "namespace": namespace}
    ids = ["s0", "s1", "s2"]
    nodes = [RaftNode(id=i, members=ids, channel=chan, secret="right", **FAST) for i in ids]
    try:
        leader = one_leader(nodes)
        victim = next(n for n in nodes if n is not leader)
        term = victim.term
        evil = Message(MsgType.APPEND, src=leader.id, dst=victim.id, term=term + 50)
        vote = Message(MsgType.VOTE, src=leader.id, dst=victim.id, term=term + 50, index=10**6,
                       log_term=10**6)
        r = redis_server.client()
        try:
            key = f"conflux:{{{namespace}}}:inbox:{victim.id}"
            for m in (evil, vote):
                r.xadd(key, {"m": encode(m)})  # unsigned
                r.xadd(key, {"m": encode(m, b"wrong")})  # forged
        finally:
            r.close()
        wait_for(lambda: victim.status()["malformed"] >= 4, what="forgeries counted")
        assert victim.term < term + 50
        assert victim.append("still fine").result(10) > 0
        assert leader.is_leader() or one_leader(nodes)
    finally:
        for n in nodes:
            n.close()


def test_appends_that_break_raft_are_dropped_and_counted(redis_url: str, namespace: str,
                                                         redis_server: Any) -> None:
    # Indexes 7 then 3 used to leave a log labelled 7, 3 and acknowledge index 2; an
    # index below the commit index raised AssertionError in the log and closed the node.
    chan = {"name": "redis", "url": redis_url, "namespace": namespace}
    ids = ["g0", "g1", "g2"]
    nodes = [RaftNode(id=i, members=ids, channel=chan, **FAST) for i in ids]
    try:
        leader = one_leader(nodes)
        for i in range(3):
            leader.append(i).result(10)
        victim = next(n for n in nodes if n is not leader)
        wait_for(lambda: victim.commit_index == leader.commit_index, what="the victim's commit")
        term, commit = victim.term, victim.commit_index
        before = victim.status()["malformed"]
        shuffled = Message(MsgType.APPEND, src=leader.id, dst=victim.id, term=term,
                           index=commit, log_term=term, commit=commit,
                           entries=(Entry(term, 7, b"7"), Entry(term, 3, b"3")))
        rewind = Message(MsgType.APPEND, src=leader.id, dst=victim.id, term=term,
                         index=commit, log_term=term, commit=commit,
                         entries=(Entry(term, 1, b"1"),))
        r = redis_server.client()
        try:
            for m in (shuffled, rewind):
                r.xadd(f"conflux:{{{namespace}}}:inbox:{victim.id}", {"m": encode(m)})
        finally:
            r.close()
        wait_for(lambda: victim.status()["malformed"] >= before + 2, what="both counted")
        log = [(e.index, e.term) for e in victim.get_log()]
        assert [i for i, _ in log] == list(range(1, len(log) + 1))
        assert not victim.closed
        assert victim.append("still fine").result(10) > commit
    finally:
        for n in nodes:
            n.close()


def test_a_node_without_the_secret_cannot_take_part(redis_url: str, namespace: str) -> None:
    chan = {"name": "redis", "url": redis_url, "namespace": namespace}
    ids = ["k0", "k1", "k2"]
    nodes = [RaftNode(id=i, members=ids, channel=chan, secret=b"k" if i != "k2" else None,
                      **FAST) for i in ids]
    try:
        one_leader(nodes[:2])
        nodes[0].append("x").result(10)
        wait_for(lambda: nodes[2].status()["malformed"] > 0, what="k2 to reject signed traffic")
        assert nodes[2].commit_index == 0
    finally:
        for n in nodes:
            n.close()


def test_cluster_size_discovery_and_the_guard(channel: dict[str, Any]) -> None:
    nodes = [RaftNode(id=f"g{i}", cluster_size=3, channel=channel, **FAST) for i in range(3)]
    try:
        one_leader(nodes)
        assert all(n.voters == ("g0", "g1", "g2") for n in nodes)
        with pytest.raises(ClusterFull, match="cluster is full"):
            RaftNode(id="g3", cluster_size=3, channel=channel, **FAST)
        again = RaftNode(id="g1", cluster_size=3, channel=channel, **FAST)  # keeps its slot
        again.close()
        assert nodes[2].append("ok").result(10) > 0
    finally:
        for n in nodes:
            n.close()


def test_acl_user_and_password_in_the_url(redis_server: Any, redis_url: str,
                                          namespace: str) -> None:
    r = redis_server.client()
    try:
        r.acl_setuser("conflux-test", enabled=True, passwords=["+s3cret"],
                      keys=[f"conflux:{{{namespace}}}:*"], commands=["+@all"])
        url = redis_url.replace("redis://", "redis://conflux-test:s3cret@")
        chan = {"name": "redis", "url": url, "namespace": namespace}
        nodes = [RaftNode(id=f"u{i}", cluster_size=3, channel=chan, **FAST) for i in range(3)]
        try:
            one_leader(nodes)
            assert nodes[0].append("via acl").result(10) > 0
        finally:
            for n in nodes:
                n.close()
        bad = {"name": "redis", "url": url.replace("s3cret", "wrong"), "namespace": namespace}
        with pytest.raises(Exception, match=r"(?i)auth|password|WRONGPASS"):
            RaftNode(id="u0", cluster_size=3, channel=bad, **FAST)
    finally:
        r.acl_deluser("conflux-test")
        r.close()


def test_durable_voters_survive_redis_losing_its_data(redis_url: str, namespace: str,
                                                      redis_server: Any, tmp_path: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    # After a FLUSHALL a stranger was admitted as a voter and an original member was then
    # locked out with ClusterFull.
    chan = {"name": "redis", "url": redis_url, "namespace": namespace}
    ids = ["v0", "v1", "v2"]

    def start(i: str) -> RaftNode:
        return RaftNode(id=i, cluster_size=3, channel=chan, **FAST,
                        storage={"name": "file", "path": str(tmp_path / i)})

    nodes = [start(i) for i in ids]
    try:
        one_leader(nodes)
        assert all(n.voters == tuple(ids) for n in nodes)
    finally:
        for n in nodes:
            n.close()
    client = redis_server.client()
    try:
        client.flushall()
    finally:
        client.close()
    stranger = RaftNode(id="x", cluster_size=3, channel=chan, **FAST)  # registers first
    try:
        with caplog.at_level("WARNING", logger="conflux_raft"):
            nodes = [start(i) for i in ids]
            leader = one_leader(nodes)
            assert all(n.voters == tuple(ids) for n in nodes)
            assert leader.append("after the flush").result(10) > 0
        assert any("keeps the voters its storage holds" in r.getMessage()
                   for r in caplog.records)
        assert not stranger.is_leader()
    finally:
        stranger.close()
        for n in nodes:
            n.close()
