"""RaftNode on the in-process hub: the behaviour API.md promises."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _wait import wait_for

from conflux_raft import (
    Append,
    ClosedError,
    ClusterFull,
    ConfigError,
    LogEntry,
    MemoryHub,
    Message,
    MsgType,
    Overloaded,
    ProposalTimeout,
    RaftNode,
    RemoteError,
)
from conflux_raft.transport import encode

FAST = {"election_timeout": (0.15, 0.3), "heartbeat_interval": 0.03}


def leader_of(nodes: list[RaftNode]) -> RaftNode:
    wait_for(lambda: sum(n.is_leader() for n in nodes) == 1
             and all(n.leader_id is not None for n in nodes), what="one leader")
    return next(n for n in nodes if n.is_leader())


class Cluster:
    def __init__(self, n: int, **opts: Any) -> None:
        self.namespace = f"t-{uuid.uuid4().hex[:8]}"
        self.ids = [f"n{i}" for i in range(n)]
        self.opts = {**FAST, **opts}
        self.committed: dict[str, list[tuple[int, Any]]] = {i: [] for i in self.ids}
        self.nodes = [self.make(i) for i in self.ids]

    def make(self, node_id: str, **extra: Any) -> RaftNode:
        node = RaftNode(id=node_id, members=self.ids,
                        channel={"name": "memory", "namespace": self.namespace},
                        autostart=False, **{**self.opts, **extra})
        log = self.committed[node_id]
        node.on("committed", lambda data, index: log.append((index, data)))
        node.start()
        return node

    def close(self) -> None:
        for n in self.nodes:
            n.close()
        MemoryHub.reset(self.namespace)


@pytest.fixture
def cluster3() -> Iterator[Cluster]:
    c = Cluster(3, rpc={"add": lambda a, b: a + b, "boom": _boom, "ret": lambda: ValueError("no")})
    yield c
    c.close()


def _boom() -> None:
    raise KeyError("missing")


def test_single_node_cluster_commits() -> None:
    c = Cluster(1)
    try:
        assert c.nodes[0].append({"x": 1}).result(5) >= 2  # after the leader's no-op
        assert c.committed["n0"][-1][1] == {"x": 1}
    finally:
        c.close()


def test_append_from_every_node_commits_everywhere_in_the_same_order(cluster3: Cluster) -> None:
    leader_of(cluster3.nodes)
    futs = [n.append([n.id, k]) for k in range(20) for n in cluster3.nodes]
    indexes = [f.result(10) for f in futs]
    assert len(set(indexes)) == len(indexes)
    wait_for(lambda: all(len(v) == 60 for v in cluster3.committed.values()), what="all applied")
    logs = list(cluster3.committed.values())
    assert logs[0] == logs[1] == logs[2]
    for n in cluster3.nodes:  # each node's appends commit in the order it made them
        mine = [d[1] for _, d in logs[0] if d[0] == n.id]
        assert mine == list(range(20))


def test_committed_callback_runs_before_the_future_resolves(cluster3: Cluster) -> None:
    leader_of(cluster3.nodes)
    follower = next(n for n in cluster3.nodes if not n.is_leader())
    index = follower.append("hello").result(5)
    assert (index, "hello") in cluster3.committed[follower.id]


def test_rpc_runs_on_the_leader_and_errors_come_back(cluster3: Cluster) -> None:
    leader_of(cluster3.nodes)
    for n in cluster3.nodes:
        assert n.dispatch_on_leader("add", [2, 3]).result(5) == 5
        with pytest.raises(KeyError):
            n.dispatch_on_leader("boom").result(5)
        with pytest.raises(ValueError, match="no"):
            n.dispatch_on_leader("ret").result(5)
        with pytest.raises(KeyError):
            n.dispatch_on_leader("nope").result(5)


def test_an_rpc_that_returns_append_decides_against_the_leaders_log() -> None:
    nodes: list[RaftNode] = []

    def take(name: str) -> Append | ValueError:
        # Runs on the leader's loop thread: its log, uncommitted entries included, is the
        # one it decides against, and the Append lands in it before the next rpc runs.
        leader = next(n for n in nodes if n.is_leader())
        taken = {e.data["take"] for e in leader.get_log() if not e.internal}
        return ValueError(f"{name} is taken") if name in taken else Append({"take": name})

    c = Cluster(3, rpc={"take": take})
    nodes.extend(c.nodes)
    try:
        leader_of(c.nodes)
        futures = [n.dispatch_on_leader("take", ["x"]) for n in c.nodes for _ in range(3)]
        outcomes = []
        for f in futures:
            try:
                outcomes.append(f.result(5))
            except ValueError as exc:
                outcomes.append(str(exc))
        won = [o for o in outcomes if isinstance(o, LogEntry)]
        assert len(won) == 1 and outcomes.count("x is taken") == 8
        entry = won[0]
        assert entry.data == {"take": "x"} and not entry.internal
        for n in c.nodes:  # resolved once applied on the caller: applied everywhere soon
            wait_for(lambda n=n: (entry.index, {"take": "x"}) in c.committed[n.id],
                     what=f"{n.id} to apply the entry")
    finally:
        c.close()


def test_an_append_the_leader_loses_fails_its_future() -> None:
    cut_off: list[str] = []

    def put(v: Any) -> Append:  # runs on the leader, confirmed; then it is cut off
        MemoryHub.get(c.namespace).isolate(cut_off[0])
        return Append(v)

    c = Cluster(3, rpc={"put": put})
    try:
        old = leader_of(c.nodes)
        hub = MemoryHub.get(c.namespace)
        cut_off.append(old.id)
        lost = old.dispatch_on_leader("put", ["lost"])  # appended, never committed
        rest = [n for n in c.nodes if n is not old]
        new = leader_of(rest)
        for i in range(3):
            new.append(i).result(5)
        hub.heal()
        with pytest.raises(ProposalTimeout, match="replaced"):
            lost.result(10)
        assert all(d != "lost" for _, d in c.committed[old.id])
    finally:
        c.close()


def test_remote_error_for_non_builtin_exceptions() -> None:
    class Custom(Exception):
        pass

    def fail() -> None:
        raise Custom("bad")

    c = Cluster(3, rpc={"fail": fail})
    try:
        leader_of(c.nodes)
        follower = next(n for n in c.nodes if not n.is_leader())
        with pytest.raises(RemoteError, match="Custom: bad"):
            follower.dispatch_on_leader("fail").result(5)
    finally:
        c.close()


def test_leader_failover_keeps_every_acknowledged_entry(cluster3: Cluster) -> None:
    old = leader_of(cluster3.nodes)
    acked = [f.result(5) for f in [old.append(i) for i in range(10)]]
    old.close()
    rest = [n for n in cluster3.nodes if n is not old]
    new = leader_of(rest)
    assert new is not old
    new_index = rest[0].append("after").result(10)
    wait_for(lambda: all(cluster3.committed[n.id] and cluster3.committed[n.id][-1][0]
                         >= new_index for n in rest), what="survivors applied")
    for n in rest:
        indexes = {i for i, _ in cluster3.committed[n.id]}
        assert set(acked) <= indexes


def test_leader_elected_fires_only_on_change(cluster3: Cluster) -> None:
    events: list[tuple[str, int]] = []
    node = cluster3.nodes[0]
    node.on("leader_elected", lambda leader, term: events.append((leader, term)))
    leader = leader_of(cluster3.nodes)
    time.sleep(0.5)  # many heartbeats
    assert events and events[-1][0] == leader.id
    assert len(set(events)) == len(events)  # heartbeats do not fire it again


def test_proposals_wait_for_a_leader_and_time_out_with_timeouterror() -> None:
    c = Cluster(3)
    try:
        lone = c.nodes[0]
        for n in c.nodes[1:]:
            n.close()
        with pytest.raises(ProposalTimeout) as info:
            lone.append("x", timeout=0.3).result(5)
        assert isinstance(info.value, TimeoutError)
    finally:
        c.close()


def test_close_rejects_pending_and_refuses_new_work() -> None:
    c = Cluster(3)
    try:
        lone = c.nodes[0]
        for n in c.nodes[1:]:
            n.close()
        fut = lone.append("never")
        lone.close()
        with pytest.raises(ClosedError):
            fut.result(5)
        with pytest.raises(ClosedError):
            lone.append("x")
        with pytest.raises(ClosedError):
            lone.dispatch_on_leader("add", [1, 2])
        lone.close()  # twice is harmless
        assert not [t for t in threading.enumerate() if t.name.endswith(f"-{lone.id}")
                    and t.name.startswith("conflux-") and t.is_alive()]
    finally:
        c.close()


def test_overload_fails_fast_and_every_future_settles() -> None:
    c = Cluster(3, max_pending=50)
    try:
        leader_of(c.nodes)
        futs = [c.nodes[0].append(i) for i in range(500)]
        outcomes: list[str] = []
        for f in futs:
            try:
                f.result(20)
                outcomes.append("ok")
            except Overloaded:
                outcomes.append("overloaded")
        assert "overloaded" in outcomes and "ok" in outcomes
    finally:
        c.close()


def test_bad_input_fails_at_once() -> None:
    c = Cluster(1)
    try:
        with pytest.raises(TypeError):
            c.nodes[0].append({1, 2})
        with pytest.raises(ValueError):
            c.nodes[0].append("x", timeout=-1)
    finally:
        c.close()


@pytest.mark.parametrize(
    ("opts", "name"),
    [
        ({"id": ""}, "id"),
        ({"id": "a"}, "cluster_size"),
        ({"id": "a", "cluster_size": 0}, "cluster_size"),
        ({"id": "a", "members": ["b"]}, "members"),
        ({"id": "a", "members": ["a", "a"]}, "members"),
        ({"id": "a", "cluster_size": 1, "channel": {"name": "carrier-pigeon"}}, "channel"),
        ({"id": "a", "cluster_size": 1, "election_timeout": (0.5, 0.1)}, "election_timeout"),
        ({"id": "a", "cluster_size": 1, "heartbeat_interval": 1.0}, "heartbeat_interval"),
        ({"id": "a", "cluster_size": 1, "storage": {"name": "file"}}, "storage.path"),
        ({"id": "a", "cluster_size": 1, "rpc": {"f": 3}}, "rpc"),
        ({"id": "a", "cluster_size": 1, "channel": {"name": "redis"}}, "channel.url"),
        ({"id": "a", "members": ["a"], "snapshot": 3}, "snapshot"),
    ],
)
def test_bad_options_name_the_option(opts: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        RaftNode(**opts)
    assert isinstance(info.value, ValueError)


def test_cluster_size_discovery_refuses_an_extra_node() -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    chan = {"name": "memory", "namespace": ns}
    nodes = [RaftNode(id=f"d{i}", cluster_size=3, channel=chan, **FAST) for i in range(3)]
    try:
        leader_of(nodes)
        assert all(set(n.voters or ()) == {"d0", "d1", "d2"} for n in nodes)
        with pytest.raises(ClusterFull):
            RaftNode(id="d3", cluster_size=3, channel=chan, **FAST)
        assert nodes[1].append("ok").result(5) > 0
    finally:
        for n in nodes:
            n.close()
        MemoryHub.reset(ns)


def test_durable_storage_survives_a_restart(tmp_path: Any) -> None:
    c = Cluster(3)
    try:
        leader_of(c.nodes)
        victim = c.nodes[2]
        c.nodes[2].close()
        c.nodes[2] = c.make("n2", storage={"name": "file", "path": str(tmp_path / "n2")})
        acked = [c.nodes[0].append(i).result(10) for i in range(5)]
        wait_for(lambda: c.nodes[2].commit_index >= acked[-1], what="n2 caught up")
        c.nodes[2].close()
        replay: list[tuple[int, Any]] = []
        again = RaftNode(id="n2", members=c.ids, channel={"name": "memory", "namespace":
                         c.namespace}, storage={"name": "file", "path": str(tmp_path / "n2")},
                         autostart=False, **FAST)
        again.on("committed", lambda data, index: replay.append((index, data)))
        again.start()
        c.nodes[2] = again
        wait_for(lambda: len(replay) >= 5, what="replay after restart")
        assert [d for _, d in replay[:5]] == [0, 1, 2, 3, 4]
        assert victim is not again
    finally:
        c.close()


def test_status_reports_counters(cluster3: Cluster) -> None:
    leader = leader_of(cluster3.nodes)
    leader.append("x").result(5)
    st = leader.status()
    assert st["role"] == "leader" and st["leader"] == leader.id
    assert set(st["progress"]) == {n.id for n in cluster3.nodes} - {leader.id}
    assert st["malformed"] == 0 and "dropped" in st["transport"]


def test_entries_held_in_the_log_cost_their_size_not_a_buffer_each() -> None:
    # orjson returns its encoding in a 4 KiB buffer; a log of small entries kept those
    # buffers: 100,000 entries took 420 MiB.
    import gc
    import tracemalloc

    c = Cluster(1)
    try:
        node = c.nodes[0]
        leader_of(c.nodes)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            futures = [node.append({"type": "add", "v": i}) for i in range(2000)]
            for f in futures:
                f.result(10)
            del futures
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 2000 * 1024, f"{grown / 2000:.0f} bytes per entry"
    finally:
        c.close()


def test_a_second_node_on_a_storage_directory_fails_at_once(tmp_path: Any) -> None:
    # Both used to run: one died on FileNotFoundError (hardstate.tmp), and after a
    # restart the replicas disagreed.
    storage = {"name": "file", "path": str(tmp_path / "n0")}
    c = Cluster(1, storage=storage)
    try:
        leader_of(c.nodes)
        with pytest.raises(ConfigError, match="in use by another node"):
            RaftNode(id="n0", members=["n0"], storage=storage,
                     channel={"name": "memory", "namespace": c.namespace + "-other"})
        assert c.nodes[0].append("still mine").result(5) > 0
        assert not c.nodes[0].closed
    finally:
        c.close()


def test_timed_out_proposals_still_count_toward_max_pending() -> None:
    # A timed-out proposal stays queued (it may still commit); it used to stop counting,
    # and with no quorum 200 timed-out appends were all held with max_pending=10.
    alone = RaftNode(id="a", members=["a", "b", "c"], max_pending=10,
                     channel={"name": "memory", "namespace": f"t-{uuid.uuid4().hex[:8]}"})
    try:
        timed_out = [alone.append(i, timeout=0.05) for i in range(10)]
        for f in timed_out:
            with pytest.raises(ProposalTimeout):
                f.result(5)
        with pytest.raises(Overloaded):
            alone.append("one more").result(0)
    finally:
        alone.close()


def test_settled_deadlines_are_not_kept_until_they_expire() -> None:
    # Every deadline stayed in the table, with its future, until it expired.
    import gc
    import tracemalloc

    c = Cluster(1)
    try:
        node = c.nodes[0]
        leader_of(c.nodes)

        def grown(n: int, timeout: float | None) -> int:
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for start in range(0, n, 500):  # at most 500 in flight
                    futures = [node.append({"v": i}, timeout=timeout)
                               for i in range(start, start + 500)]
                    for f in futures:
                        f.result(10)
                del futures, f
                gc.collect()
                return int(tracemalloc.get_traced_memory()[0] - before)
            finally:
                tracemalloc.stop()

        n = 10_000
        extra = grown(n, 3600) - grown(n, None)
        assert extra < n * 600, f"{extra / n:.0f} bytes kept per settled deadline"
    finally:
        c.close()


def test_a_timeout_says_why() -> None:
    # It used to be a bare "not committed in time", whatever the cause.
    alone = RaftNode(id="a", members=["a", "b", "c"],
                     channel={"name": "memory", "namespace": f"t-{uuid.uuid4().hex[:8]}"})
    try:
        with pytest.raises(ProposalTimeout, match=r"no leader known for \d+\.\d s"):
            alone.append(1, timeout=0.3).result(5)
        with pytest.raises(ProposalTimeout, match=r"no leader known.*it may have run"):
            alone.dispatch_on_leader("nothing", timeout=0.3).result(5)
    finally:
        alone.close()


def test_a_timeout_names_an_unreachable_redis(namespace: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        node = RaftNode(id="a", members=["a", "b"],
                        channel={"name": "redis", "url": f"redis://127.0.0.1:{port}/0",
                                 "namespace": namespace, "connect_timeout": 0.2})
        try:
            node.append(0)  # something to send, so that the failure is seen
            with pytest.raises(ProposalTimeout,
                               match=rf"Redis at 127\.0\.0\.1:{port} unreachable for"):
                node.append(1, timeout=1.0).result(5)
        finally:
            node.close()


def test_a_slow_rpc_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    c = Cluster(1, rpc={"slow": lambda: time.sleep(0.1)}, election_timeout=(0.2, 0.3),
                heartbeat_interval=0.03)
    try:
        leader_of(c.nodes)
        with caplog.at_level("WARNING", logger="conflux_raft"):
            c.nodes[0].dispatch_on_leader("slow").result(5)
        assert any("rpc slow took" in r.getMessage() for r in caplog.records)
    finally:
        c.close()


def test_an_rpc_whose_message_is_lost_is_sent_again_and_runs_once() -> None:
    # It was sent once: one lost message left the future pending forever.
    runs: list[int] = []
    c = Cluster(3, rpc={"count": lambda: runs.append(1) or len(runs)})
    try:
        leader = leader_of(c.nodes)
        follower = next(n for n in c.nodes if n is not leader)
        hub = MemoryHub.get(c.namespace)
        hub.isolate(follower.id)
        fut = follower.dispatch_on_leader("count")
        time.sleep(0.05)  # sent, and lost
        hub.heal()
        assert fut.result(5) == 1
        time.sleep(0.5)  # later retries, if any, are answered from the leader's cache
        assert runs == [1]
    finally:
        c.close()


def test_a_deposed_leader_answers_a_retry_from_its_cache() -> None:
    # It answered "redirect" once it no longer led, so the caller sent the call to the
    # next leader, which ran it a second time.
    runs: list[int] = []
    c = Cluster(3, rpc={"count": lambda: runs.append(1) or len(runs)})
    try:
        leader = leader_of(c.nodes)
        follower = next(n for n in c.nodes if n is not leader)
        assert follower.dispatch_on_leader("count").result(5) == 1
        loop = leader._loop
        rid = next(iter(loop._served))
        MemoryHub.get(c.namespace).isolate(leader.id)
        wait_for(lambda: not leader.is_leader(), what="the cut-off leader steps down")
        answers: list[Any] = []
        loop._answer = lambda to, rid, payload: answers.append(payload)  # type: ignore[method-assign]
        retry = Message(MsgType.RPC, follower.id, leader.id, context=rid, payload=["count", []])
        loop.deliver(encode(retry, None))
        wait_for(lambda: answers, what="an answer to the retry")
        assert answers[0]["ok"] == 1
        assert runs == [1]
    finally:
        c.close()


def test_an_rpc_outlives_a_while_with_no_leader_known() -> None:
    # A caller that lost sight of the leader for a moment (its pre-vote) failed the call
    # with "the leader changed", though the same leader went on leading.
    runs: list[int] = []
    c = Cluster(3, rpc={"count": lambda: runs.append(1) or len(runs)})
    try:
        leader = leader_of(c.nodes)
        caller = next(n for n in c.nodes if n is not leader)
        hub = MemoryHub.get(c.namespace)
        hub.isolate(caller.id)
        fut = caller.dispatch_on_leader("count")
        wait_for(lambda: caller.leader_id is None, what="the caller loses sight of the leader")
        hub.heal()
        assert fut.result(5) == 1
        assert leader.is_leader() and runs == [1]
    finally:
        c.close()


def test_a_restarted_nodes_session_is_numbered_above_its_old_ones(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node's new session supersedes its older ones, and the leader refuses the older:
    # a clock that went back must not number the new one below what storage holds.
    storage = {"name": "file", "path": str(tmp_path / "n0")}
    c = Cluster(1, storage=storage)
    try:
        c.nodes[0].append("before").result(5)
        old = c.nodes[0]._loop.session
        c.nodes[0].close()
        monkeypatch.setattr(time, "time_ns", lambda: 1_000_000)  # 1970, one second in
        c.nodes[0] = c.make("n0", storage=storage)
        assert c.nodes[0].append("after").result(5) > 0
        new = c.nodes[0]._loop.session
        assert new.startswith("n0.") and int(new[3:]) == int(old[3:]) + 1
    finally:
        c.close()


def test_an_rpc_sent_back_by_the_leader_it_still_sees_is_sent_to_it_again() -> None:
    # A leader that stepped down and up again (its caller never saw the change) sent a
    # parked call back ("redirect"): the caller waited for a new leader, forever.
    runs: list[int] = []
    c = Cluster(3, rpc={"count": lambda: runs.append(1) or len(runs)})
    try:
        leader = leader_of(c.nodes)
        caller = next(n for n in c.nodes if n is not leader)
        serve = leader._loop._serve_rpc
        leader._loop._serve_rpc = lambda core, m: None  # type: ignore[method-assign]
        fut = caller.dispatch_on_leader("count")
        wait_for(lambda: caller._loop._rpc_out, what="the call to be in flight")
        rid = next(iter(caller._loop._rpc_out))
        leader._loop._serve_rpc = serve  # type: ignore[method-assign]
        back = Message(MsgType.RPC_RESP, leader.id, caller.id, context=rid,
                       payload={"redirect": None})
        caller._loop.deliver(encode(back, None))
        assert fut.result(5) == 1 and runs == [1]
        assert caller.leader_id == leader.id
    finally:
        c.close()


def test_a_retry_that_outlives_its_answer_is_not_run_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The leader keeps answers for a while; a retry that came after its answer was
    # dropped (a caller cut off for longer than that) ran the call a second time.
    import conflux_raft.node._loop as loop_module

    monkeypatch.setattr(loop_module, "_SERVED_FOR", 0.3)
    runs: list[int] = []
    hub_of: list[MemoryHub] = []
    caller_id: list[str] = []

    def count() -> int:
        runs.append(1)
        if len(runs) == 1:  # its answer is lost: the caller is cut off as it runs
            hub_of[0].isolate(caller_id[0])
        return len(runs)

    c = Cluster(3, rpc={"count": count, "noop": lambda: None})
    try:
        hub_of.append(MemoryHub.get(c.namespace))
        leader = leader_of(c.nodes)
        caller, other = (n for n in c.nodes if n is not leader)
        caller_id.append(caller.id)
        fut = caller.dispatch_on_leader("count")
        wait_for(lambda: runs, what="the call to run")
        time.sleep(0.5)  # its answer is older than the leader keeps answers
        other.dispatch_on_leader("noop").result(5)  # a new answer drops the old
        hub_of[0].heal()
        with pytest.raises(ProposalTimeout, match="may have run"):
            fut.result(5)
        assert runs == [1]
    finally:
        c.close()


def test_a_node_whose_session_the_leader_refuses_is_told_so(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A node started with no storage of its own on a clock behind its previous start
    # numbered its session below the old one: the leader refused its proposals in
    # silence, and they waited forever.
    c = Cluster(3)
    try:
        leader = leader_of(c.nodes)
        i = next(k for k, n in enumerate(c.nodes) if n is not leader)
        node_id = c.nodes[i].id
        c.nodes[i].append("before").result(5)
        c.nodes[i].close()
        monkeypatch.setattr(time, "time_ns", lambda: 1_000_000)  # 1970, one second in
        c.nodes[i] = c.make(node_id)  # memory storage: nothing to number above
        with pytest.raises(ConfigError, match="superseded by incarnation"):
            c.nodes[i].append("after").result(5)
        with pytest.raises(ConfigError, match="superseded"):  # and later ones at once
            c.nodes[i].append("again").result(0.5)
        assert leader.append("others go on").result(5) > 0
    finally:
        c.close()
