"""Linearizable reads (ReadIndex, Raft thesis §6.4): in the core step by step, on nodes
over the memory channel, and through a store. A read is answered at an index that holds
every entry committed before it was asked, and never by a leader that cannot prove it
still leads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from _wait import wait_for
from test_node import Cluster as Nodes
from test_node import leader_of
from test_redux import Cluster as Stores

from conflux_raft import Message, MsgType, ProposalTimeout, RaftNode, Role
from conflux_raft.testing import Cluster
from conflux_raft.transport import MemoryHub


def reads(c: Cluster, node: str) -> list[tuple[str, int]]:
    """The reads `node` may answer: their index is applied there."""
    return [(r.context, r.index) for r in c.hosts[node].reads_done]


def elected(n: int = 3, **options: Any) -> Cluster:
    c = Cluster(n, **options)
    c.elect("n1")
    c.propose("n1", b'"a"')
    c.stabilize()
    return c


# ---- the core -------------------------------------------------------------------------


def test_a_single_node_answers_a_read_at_once() -> None:
    c = Cluster(1)
    c.elect("n1")
    c["n1"].read_index("r")
    c.flush()
    assert reads(c, "n1") == [("r", c["n1"].log.commit)]


def test_a_leader_answers_once_a_quorum_answered_a_round_sent_after_the_read() -> None:
    c = elected()
    commit = c["n1"].log.commit
    c.tick("n1", times=c["n1"].cfg.heartbeat_ticks)  # heartbeats of no read round yet
    before = c.in_flight[:]
    c.deliver()  # their answers are in flight
    c["n1"].read_index("r")
    c.flush("n1")
    c.deliver(lambda m: m.type is MsgType.APPEND_RESP)  # answers sent before the read
    assert reads(c, "n1") == []
    assert before and all(m.context == "" for m in before)
    c.stabilize()  # the round the read started
    assert reads(c, "n1") == [("r", commit)]


def test_one_answer_is_not_a_quorum_of_five() -> None:
    c = elected(5)
    c["n1"].read_index("r")
    c.flush("n1")
    c.deliver(lambda m: m.dst == "n2")
    c.deliver(lambda m: m.type is MsgType.APPEND_RESP)
    assert reads(c, "n1") == []  # n1 and n2: two of five
    c.deliver(lambda m: m.dst == "n3")
    c.deliver(lambda m: m.type is MsgType.APPEND_RESP)
    assert [ctx for ctx, _ in reads(c, "n1")] == ["r"]


def test_a_leader_cut_off_never_answers_though_it_still_believes_it_leads() -> None:
    c = elected(check_quorum=False)  # no lease, and a leader that never steps down alone
    c.isolate("n1")
    c.elect("n2")
    c.propose("n2", b'"b"')
    c.stabilize()
    assert c["n1"].role is Role.LEADER  # no tick has told it otherwise
    c["n1"].read_index("stale?")
    c.stabilize()
    assert reads(c, "n1") == []
    c.recover()
    c.run(ticks=3)  # it hears of the new term and steps down; the read is dropped
    assert c["n1"].role is Role.FOLLOWER and reads(c, "n1") == []
    c["n1"].read_index("again")  # as a driver asks again: the leader answers
    c.stabilize()
    c.run(ticks=2)  # the commit reaches n1, which may then answer
    assert reads(c, "n1") == [("again", c["n2"].log.commit)]


def test_a_new_leader_answers_only_once_an_entry_of_its_term_is_committed() -> None:
    c = elected(check_quorum=False)
    c.isolate("n1")
    c.ignore(MsgType.APPEND)  # n2 wins, but its no-op reaches nobody
    c.elect("n2")
    n2 = c["n2"]
    assert n2.log.term_at(n2.log.commit) != n2.term
    n2.read_index("r")
    c.stabilize()
    assert reads(c, "n2") == []
    c.recover()
    c.run(ticks=3)
    assert n2.log.term_at(n2.log.commit) == n2.term
    assert reads(c, "n2") == [("r", n2.log.commit)]


def test_a_follower_reads_through_the_leader() -> None:
    c = elected()
    c["n3"].read_index("f")
    c.flush("n3")
    assert [m.type for m in c.in_flight] == [MsgType.READ_INDEX]
    c.stabilize()
    assert reads(c, "n3") == [("f", c["n1"].log.commit)]


def test_a_follower_with_no_leader_drops_the_read() -> None:
    c = Cluster(3)
    c["n2"].read_index("f")
    c.flush()
    assert c.in_flight == [] and reads(c, "n2") == []


def test_a_round_that_was_never_sent_is_malformed() -> None:
    c = elected()
    leader = c["n1"]
    for context in ("999", "x", "²", "1" * 30):
        before = leader.malformed
        c.step(Message(MsgType.APPEND_RESP, "n2", "n1", term=leader.term,
                       index=leader.log.last_index, context=context))
        assert leader.malformed == before + 1
    c.step(Message(MsgType.READ_INDEX, "n2", "n1", term=leader.term))  # no context
    assert leader.malformed == before + 2


# ---- nodes ----------------------------------------------------------------------------


def test_a_read_on_every_node_holds_what_was_acknowledged_before_it() -> None:
    c = Nodes(3)
    try:
        writer = c.nodes[0]
        for i in range(5):
            index = writer.append(i).result(5)
            for n in c.nodes:
                seen: list[bool] = []
                got = n.read(timeout=5).result(5)
                seen.append((index, i) in c.committed[n.id])  # callbacks ran by then
                assert got >= index and seen == [True]
    finally:
        c.close()


def test_a_read_on_a_leader_cut_off_times_out_and_says_why() -> None:
    c = Nodes(3)
    try:
        old = leader_of(c.nodes)
        MemoryHub.get(c.namespace).isolate(old.id)
        with pytest.raises(ProposalTimeout, match="the read was not confirmed in time"):
            old.read(timeout=0.2).result(5)
    finally:
        c.close()


def test_a_leader_paused_then_cut_off_does_not_answer_from_its_old_state() -> None:
    # The finding: a leader paused or cut off, a new leader elected that
    # acknowledged more writes, and the old one, resuming, answered an rpc at once from
    # the state it had: 3 of 3 runs of the fault test read overwritten values. (Since
    # the loop counts real time, a resumed leader steps down before it serves: this
    # test keeps that so; the next one fails without the read index.)
    applied: dict[str, Any] = {}
    hub_of: list[MemoryHub] = []

    def get() -> Any:  # the state of the node it runs on (its loop thread's name ends so)
        return applied.get(threading.current_thread().name.rsplit("-", 1)[1])

    def pause(seconds: float, cut_off: str) -> None:  # blocks the leader's loop thread
        hub_of[0].isolate(cut_off)
        time.sleep(seconds)

    c = Nodes(3, rpc={"get": get, "pause": pause})
    try:
        hub_of.append(MemoryHub.get(c.namespace))
        for n in c.nodes:
            n.on("committed", lambda data, _, node=n.id: applied.__setitem__(node, data))
        old = leader_of(c.nodes)
        old.append("before").result(5)
        old.dispatch_on_leader("pause", [1.0, old.id])
        rest = [n for n in c.nodes if n is not old]
        wait_for(lambda: any(n.is_leader() for n in rest), what="a new leader")
        new = next(n for n in rest if n.is_leader())
        new.append("after").result(5)  # acknowledged before the read begins
        answer = old.dispatch_on_leader("get", timeout=5)
        time.sleep(1.2)  # the old leader resumes, still cut off
        hub_of[0].heal()
        assert answer.result(5) == "after"
    finally:
        c.close()


def test_a_leader_cut_off_that_still_believes_it_leads_does_not_answer_an_rpc() -> None:
    # The finding without a pause: a leader cut off keeps believing it leads until its
    # check-quorum fires, while the others elect a leader that acknowledges writes; an
    # rpc run on the old one in between read a value already overwritten.
    applied: dict[str, Any] = {}
    ids = ["old", "b", "c"]
    namespace = f"t-{time.monotonic_ns()}"

    def get() -> Any:  # the state of the node it runs on (its loop thread's name ends so)
        return applied.get(threading.current_thread().name.rsplit("-", 1)[1])

    def make(node_id: str, timeout: tuple[float, float]) -> RaftNode:
        node = RaftNode(id=node_id, members=ids, rpc={"get": get}, autostart=False,
                        channel={"name": "memory", "namespace": namespace},
                        election_timeout=timeout, heartbeat_interval=0.03)
        node.on("committed", lambda data, _: applied.__setitem__(node_id, data))
        node.start()
        return node

    # "old" has the longest timeouts, so it wins the first election and, once cut off,
    # is the last to notice: it checks its quorum only once a second.
    nodes = [make("old", (1.0, 1.1))]
    try:
        time.sleep(0.8)  # the others, up now, would campaign 0.5 s from now: later
        nodes += [make(i, (0.5, 0.6)) for i in ids[1:]]
        old = nodes[0]
        wait_for(lambda: old.is_leader(), what="old to lead")
        old.append("before").result(5)
        wait_for(lambda: all(applied.get(i) == "before" for i in ids), what="all applied")
        hub = MemoryHub.get(namespace)
        hub.isolate("old")
        wait_for(lambda: any(n.is_leader() for n in nodes[1:]), what="a new leader")
        new = next(n for n in nodes[1:] if n.is_leader())
        new.append("after").result(5)  # acknowledged before the rpc begins
        if not old.is_leader():
            pytest.skip("the old leader stepped down before the rpc (a slow machine)")
        answer = old.dispatch_on_leader("get", timeout=10)
        time.sleep(0.2)
        hub.heal()
        assert answer.result(10) == "after"
    finally:
        for n in nodes:
            n.close()
        MemoryHub.reset(namespace)


def test_a_lost_rpc_answer_is_asked_again_and_answered_from_the_cache() -> None:
    runs: list[int] = []
    hub_of: list[MemoryHub] = []
    caller: list[str] = []

    def count() -> int:  # the answer to this call is lost: the caller is cut off now
        runs.append(1)
        hub_of[0].isolate(caller[0])
        threading.Timer(0.1, hub_of[0].heal).start()
        return len(runs)

    c = Nodes(3, rpc={"count": count})
    try:
        hub_of.append(MemoryHub.get(c.namespace))
        leader = leader_of(c.nodes)
        follower = next(n for n in c.nodes if n is not leader)
        caller.append(follower.id)
        assert follower.dispatch_on_leader("count").result(5) == 1
        time.sleep(0.5)  # later retries, if any, are answered from the cache too
        assert runs == [1]
    finally:
        c.close()


# ---- stores ---------------------------------------------------------------------------


def test_store_read_holds_every_action_committed_before_it(namespace: str) -> None:
    c = Stores(namespace)
    try:
        for i in range(5):
            c.stores[i % 3].dispatch({"type": "append", "item": i}).result(5)
            for s in c.stores:
                assert s.read(timeout=5).result(5)[-1] == i
                assert s["read"]().result(5)[-1] == i
    finally:
        c.close()


def test_dispatch_resolves_with_the_action_as_every_node_reduced_it(namespace: str) -> None:
    c = Stores(namespace)
    try:
        action = {"type": "append", "item": ("a", 1)}  # a tuple travels as a list
        done = c.stores[1].dispatch(action).result(5)
        assert done == {"type": "append", "item": ["a", 1]}
        assert c.assert_replicas_equal() == [["a", 1]]
    finally:
        c.close()


def test_store_read_checks_its_timeout(namespace: str) -> None:
    c = Stores(namespace)
    try:
        for bad in (-1, "1", True):
            with pytest.raises(ValueError, match="timeout"):
                c.stores[0].read(bad)  # type: ignore[arg-type]
    finally:
        c.close()
