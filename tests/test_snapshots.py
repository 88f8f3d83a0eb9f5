"""Snapshots in the core, step by step: compaction with a trailing window, InstallSnapshot
in chunks (resumed after a lost chunk), a node that starts empty, a follower whose log
already holds the snapshot point, sessions carried over, and chunks no leader sends."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from _wait import wait_for
from pydux import create_store
from test_redux import list_reducer

from conflux_raft import ClosedError, ConfigError, Message, MsgType, RaftNode
from conflux_raft.core import HardState, ProgressState
from conflux_raft.testing import Cluster
from conflux_redux import ConfluxStore, conflux_enhancer


def cluster(every: int = 10, keep: int = 0, check: bool = True) -> Cluster:
    """Three cores that snapshot every `every` applied entries, keeping `keep` behind."""
    c = Cluster(3, max_snapshot_chunk=64, check=check)
    for host in c.hosts.values():
        host.snapshot_every, host.keep = every, keep
    c.elect("n1")
    return c


def propose(c: Cluster, node: str, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        c.propose(node, str(i).encode())
        c.stabilize()


def chunks_to(c: Cluster, node: str) -> list[Message]:
    return [m for m in c.sent if m.type is MsgType.SNAPSHOT and m.dst == node]


def test_the_log_is_compacted_to_the_snapshot_but_for_a_window() -> None:
    c = cluster(every=10, keep=3)
    propose(c, "n1", 25)
    leader = c["n1"]
    assert leader.snapshot is not None and leader.snapshot.index == 20
    assert leader.log.offset == 17  # three entries kept behind the snapshot
    assert c.hosts["n1"].storage.first_index() == 18
    assert c.applied("n1") == c.applied("n2") == c.applied("n3")


def test_a_follower_behind_the_compaction_point_gets_the_snapshot_in_chunks() -> None:
    c = cluster()
    c.isolate("n3")
    propose(c, "n1", 30)
    assert c["n1"].log.offset >= 20 and c["n3"].log.last_index < c["n1"].log.offset
    c.recover()
    c.run(ticks=10)
    sent = chunks_to(c, "n3")
    assert len({m.hint for m in sent}) > 1  # more than one chunk, each within 64 bytes
    assert all(len(base64.b64decode(m.payload["data"])) <= 64 for m in sent)
    assert c.applied("n3") == c.applied("n1")
    assert c["n1"]._progress["n3"].state is ProgressState.REPLICATE
    propose(c, "n2", 1, start=100)  # and replication goes on from there
    c.run(ticks=2)
    assert c.applied("n3") == c.applied("n1")


def test_a_lost_chunk_is_sent_again() -> None:
    c = cluster()
    c.isolate("n3")
    propose(c, "n1", 30)
    c.recover()
    c.drop("n1", "n3", rate=0.5)
    c.run(ticks=60)
    assert c["n1"]._progress["n3"].chunk_waited > 0  # a chunk was lost on the way
    c.recover()
    c.run(ticks=20)  # it is sent again once unanswered for about an election timeout
    assert c.applied("n3") == c.applied("n1")


def test_a_follower_that_is_gone_gets_heartbeats_not_a_chunk_each_time() -> None:
    # A chunk unanswered by the next heartbeat counted as lost: a follower that stopped
    # answering got a full chunk every other heartbeat (26.7 MiB in 40 heartbeats of a
    # 3 MiB snapshot), into an inbox nobody reads.
    c = cluster()
    c.isolate("n3")
    propose(c, "n1", 30)
    progress = c["n1"]._progress["n3"]
    for _ in range(20):  # its pipeline stalls, it is probed, and it needs the snapshot
        if progress.state is ProgressState.SNAPSHOT:
            break
        c.run(ticks=1)
    assert progress.state is ProgressState.SNAPSHOT and chunks_to(c, "n3")
    before = len(chunks_to(c, "n3"))
    c.run(ticks=80)  # 40 heartbeats, n3 silent
    assert len(chunks_to(c, "n3")) == before
    late = [m for m in c.sent[-100:] if m.dst == "n3"]
    assert late and all(m.type is MsgType.APPEND and not m.entries for m in late)
    c.recover()  # back: it answers a heartbeat, and the transfer resumes
    c.run(ticks=40)
    assert c.applied("n3") == c.applied("n1")


def test_a_node_that_starts_empty_is_restored_from_a_snapshot() -> None:
    c = cluster()
    propose(c, "n1", 30)
    n3 = c["n3"]
    c.crash("n3")
    c.restart("n3", HardState(n3.term, n3.vote, 0), entries=[])  # its log lost
    c.run(ticks=10)
    n3 = c["n3"]
    assert n3.snapshot is not None and n3.log.offset == n3.snapshot.index
    assert c.applied("n3") == c.applied("n1")


def test_a_follower_whose_log_holds_the_snapshot_point_keeps_its_log() -> None:
    c = cluster(every=0, check=False)  # nobody compacts: this snapshot comes by hand
    propose(c, "n1", 5)
    n3 = c["n3"]
    log = c.log("n3")
    at = log[2]
    n3.log.commit = 2  # as if the commit for the rest had not arrived yet
    c.step(Message(MsgType.SNAPSHOT, "n1", "n3", term=n3.term, index=at.index,
                   log_term=at.term, hint=0, hint_term=1,
                   payload={"data": base64.b64encode(b"x").decode(), "voters": [],
                            "sessions": []}))
    assert c.log("n3") == log and n3.log.commit == at.index and n3.snapshot is None


def test_a_nodes_proposals_held_in_a_snapshot_are_released() -> None:
    c = cluster()
    c.drop("n1", "n3")  # n3 can propose, but hears nothing back
    for i in range(3):
        c["n3"].propose(str(i).encode())
    c.stabilize()
    propose(c, "n1", 30)
    assert c["n3"].pending_proposals == 3
    c.recover()
    c.run(ticks=10)
    assert c["n3"].snapshot is not None  # their commit came inside the snapshot
    assert c["n3"].pending_proposals == 0
    assert c.applied("n3") == c.applied("n1")


def test_chunks_no_leader_sends_are_counted_as_malformed() -> None:
    c = cluster()
    n2 = c["n2"]
    index = n2.log.last_index + 5
    for payload in (None, {"data": "not base64!"}, {"data": "", "voters": [1]},
                    {"data": "", "voters": [], "sessions": [["s", 0]]}):
        before = n2.malformed
        c.step(Message(MsgType.SNAPSHOT, "n1", "n2", term=n2.term, index=index,
                       log_term=n2.term, hint=0, hint_term=0, payload=payload))
        assert n2.malformed == before + 1
    before = n2.malformed
    c.step(Message(MsgType.SNAPSHOT, "n1", "n2", term=n2.term, index=index,
                   log_term=n2.term, hint=5, hint_term=4, payload={"data": ""}))
    assert n2.malformed == before + 1  # an offset past the snapshot's size


# ---- nodes and stores -----------------------------------------------------------------


class App:
    """A node's application: the values applied, in order, snapshotted as JSON."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.restored: list[int] = []

    def apply(self, data: Any, index: int) -> None:
        self.values.append(data)

    def snapshot(self) -> bytes:
        return orjson.dumps(self.values)

    def restore(self, data: bytes) -> None:
        self.values = orjson.loads(data)


def node(namespace: str, node_id: str, app: App, **opts: Any) -> RaftNode:
    n = RaftNode(id=node_id, members=["a", "b", "c"], autostart=False,
                 channel={"name": "memory", "namespace": namespace},
                 election_timeout=(0.15, 0.3), heartbeat_interval=0.03,
                 snapshot=app.snapshot, restore=app.restore, **opts)
    n.on("committed", app.apply)
    n.on("restored", app.restored.append)
    n.start()
    return n


def test_nodes_compact_and_a_node_that_starts_empty_is_restored(namespace: str) -> None:
    apps = {i: App() for i in "abc"}
    nodes = {i: node(namespace, i, apps[i], snapshot_every=20) for i in "abc"}
    try:
        for i in range(100):
            nodes["a"].append(i).result(5)
        for i, n in nodes.items():
            wait_for(lambda n=n: n.status()["snapshot_index"] >= 80, what=f"{i} to compact")
            assert len(n.get_log()) < 60  # compacted, but for a window of 2
        nodes["c"].close()
        apps["c"] = App()  # memory storage: it comes back empty
        nodes["c"] = node(namespace, "c", apps["c"], snapshot_every=20)
        nodes["a"].append("after").result(5)
        wait_for(lambda: apps["c"].values == apps["a"].values, what="c to catch up")
        assert apps["c"].restored and apps["c"].values[-1] == "after"
        assert [v for v in apps["a"].values if v != "after"] == list(range(100))
    finally:
        for n in nodes.values():
            n.close()


def test_snapshot_needs_restore() -> None:
    with pytest.raises(ConfigError, match="restore"):
        RaftNode(id="a", members=["a"], snapshot=lambda: b"", autostart=False)
    with pytest.raises(ConfigError, match="snapshot_every"):
        RaftNode(id="a", members=["a"], snapshot_every=0, autostart=False)


def test_a_store_compacts_and_an_empty_replica_is_restored(namespace: str) -> None:
    def make(node_id: str) -> ConfluxStore:
        store: ConfluxStore = create_store(list_reducer, enhancer=conflux_enhancer({
            "id": node_id, "members": ["a", "b", "c"], "snapshot_every": 10,
            "channel": {"name": "memory", "namespace": namespace},
            "election_timeout": (0.15, 0.3), "heartbeat_interval": 0.03}))
        return store

    stores = {i: make(i) for i in "abc"}
    try:
        for i in range(40):
            stores["b"].dispatch({"type": "append", "item": i}).result(5)
        wait_for(lambda: all(s.node.status()["snapshot_index"] >= 30
                             for s in stores.values()), what="the stores to compact")
        stores["c"].close()
        stores["c"] = make("c")
        stores["a"].dispatch({"type": "append", "item": "after"}).result(5)
        wait_for(lambda: stores["c"].get_state() == stores["a"].get_state(),
                 what="c to catch up")
        assert stores["c"].read(timeout=5).result(5) == [*range(40), "after"]
    finally:
        for s in stores.values():
            s.close()


def test_a_restore_that_raises_stops_the_node(namespace: str) -> None:
    # It was logged, and the entries after the snapshot were applied on a state that was
    # never restored: the node went on, diverged, and could snapshot the wrong state.
    apps = {i: App() for i in "abc"}
    nodes = {i: node(namespace, i, apps[i], snapshot_every=20) for i in "ab"}
    try:
        for i in range(60):
            nodes["a"].append(i).result(5)
        wait_for(lambda: all(n.status()["snapshot_index"] >= 40 for n in nodes.values()),
                 what="a and b to compact")

        def broken(data: bytes) -> None:
            raise ValueError("a snapshot this version cannot read")

        apps["c"].restore = broken  # type: ignore[method-assign]
        nodes["c"] = node(namespace, "c", apps["c"], snapshot_every=20)
        wait_for(lambda: nodes["c"].closed, what="c to stop")
        assert apps["c"].values == []  # nothing applied on the state it could not restore
        with pytest.raises(ClosedError, match="restore\\(\\) raised on the snapshot"):
            nodes["c"].append("x")
        assert nodes["a"].append("after").result(5) > 0  # the others go on
    finally:
        for n in nodes.values():
            n.close()


def test_an_answer_for_an_entry_compacted_here_does_not_say_it_was_not_applied() -> None:
    # A perform's answer ("appended at 200, term 2") that reached a follower after it
    # compacted past 200 said "replaced: it was not applied", though it was applied.
    from concurrent.futures import Future

    from conflux_raft import ProposalTimeout
    from conflux_raft.core import Entry, EntryKind, RaftLog
    from conflux_raft.node._apply import Applier

    log = RaftLog([Entry(2, i, b"1", EntryKind.NORMAL) for i in range(1, 301)])
    log.commit = log.applied = 300
    log.compact_to(250)
    applier = Applier("n1")
    applier.applied = 300
    fut: Future[Any] = Future()
    applier.wait_applied(200, 2, fut, log)
    with pytest.raises(ProposalTimeout, match="compacted before the answer came") as err:
        fut.result(0)
    assert "not applied" not in str(err.value)
