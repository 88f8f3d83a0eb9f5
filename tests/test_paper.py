"""One test per rule of the Raft paper (Ongaro and Ousterhout, "In Search of an
Understandable Consensus Algorithm", extended version) and of Ongaro's dissertation
("Consensus: Bridging Theory and Practice") for pre-vote, check-quorum, sessions and
batching. Each names its section; each sets a core or a Cluster up, drives it, and checks.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from conflux_raft import (
    CoreConfig,
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    RaftCore,
    Ready,
    Role,
)
from conflux_raft.testing import Cluster

IDS = ("n1", "n2", "n3")
A, AR = MsgType.APPEND, MsgType.APPEND_RESP
V, VR = MsgType.VOTE, MsgType.VOTE_RESP


def make(node: str = "n1", ids: tuple[str, ...] = IDS, term: int = 0, vote: str | None = None,
         terms: tuple[int, ...] = (), commit: int = 0, rng: random.Random | None = None,
         **options: Any) -> RaftCore:
    """A core whose persisted log holds entries of the given `terms`."""
    options = {"election_ticks": (10, 10), "pre_vote": False, **options}
    cfg = CoreConfig(node, ids, f"{node}.1", **options)
    entries = [Entry(t, i, b"0") for i, t in enumerate(terms, start=1)]
    return RaftCore(cfg, rng or random.Random(0), HardState(term, vote, commit), entries)


def batches(core: RaftCore) -> list[Ready]:
    """Run the Ready protocol (persisting nowhere) and return the batches."""
    out = []
    while core.has_ready():
        rd = core.ready()
        out.append(rd)
        core.advance(rd)
    return out


def sent(core: RaftCore) -> list[Message]:
    return [m for rd in batches(core) for m in rd.messages]


def terms(core: RaftCore) -> list[int]:
    return [e.term for e in core.log.entries_from(1)]


def become_leader(core: RaftCore) -> None:
    """Campaign (pre-vote off) and collect every vote."""
    while core.role is Role.FOLLOWER:
        core.tick()
    for peer in core.cfg.voters:
        if peer != core.id:
            core.step(Message(VR, peer, core.id, term=core.term))
    assert core.role is Role.LEADER
    batches(core)


# ---- §5.1 terms ------------------------------------------------------------------------


def test_5_1_a_higher_term_makes_any_node_a_follower_of_that_term() -> None:
    leader = make(term=1)
    become_leader(leader)
    leader.step(Message(AR, "n2", "n1", term=7, index=0))
    assert (leader.role, leader.term, leader.vote) == (Role.FOLLOWER, 7, None)
    candidate = make(term=1)
    while candidate.role is not Role.CANDIDATE:
        candidate.tick()
    candidate.step(Message(A, "n3", "n1", term=9))
    assert (candidate.role, candidate.term, candidate.leader) == (Role.FOLLOWER, 9, "n3")


def test_5_1_a_stale_term_is_refused_and_told_the_current_term() -> None:
    follower = make(term=5, terms=(1, 2))
    follower.step(Message(A, "n2", "n1", term=3, index=2, log_term=2,
                          entries=(Entry(3, 3, b"1"),)))
    assert terms(follower) == [1, 2]
    [resp] = sent(follower)
    assert (resp.type, resp.dst, resp.term) == (AR, "n2", 5)
    old = make("n2", term=3)
    become_leader(old)  # a stale leader steps down when told the newer term
    old.step(resp)
    assert (old.role, old.term) == (Role.FOLLOWER, 5)


# ---- §5.2 leader election --------------------------------------------------------------


def test_5_2_a_follower_campaigns_after_its_election_timeout() -> None:
    core = make(term=1, terms=(1, 1))
    for _ in range(9):
        core.tick()
    assert core.role is Role.FOLLOWER and not sent(core)
    core.tick()
    assert (core.role, core.term, core.vote) == (Role.CANDIDATE, 2, "n1")
    [rd] = batches(core)
    assert rd.hard_state == HardState(2, "n1", 0)  # persisted with the requests it sends
    assert sorted((m.type, m.dst, m.term, m.index, m.log_term) for m in rd.messages) == [
        (V, "n2", 2, 2, 1), (V, "n3", 2, 2, 1)]


def test_5_2_election_timeouts_are_randomized_within_bounds() -> None:
    waited = []
    for seed in range(40):
        core = make(election_ticks=(10, 20), rng=random.Random(seed))
        ticks = 0
        while core.role is Role.FOLLOWER:
            core.tick()
            ticks += 1
        waited.append(ticks)
    assert min(waited) >= 10 and max(waited) <= 20
    assert len(set(waited)) >= 5


def test_5_2_a_candidate_wins_with_votes_from_a_majority() -> None:
    ids = ("n1", "n2", "n3", "n4", "n5")
    core = make(ids=ids, term=1)
    for _ in range(10):
        core.tick()
    core.step(Message(VR, "n2", "n1", term=2))
    core.step(Message(VR, "n3", "n1", term=2, reject=True))
    assert core.role is Role.CANDIDATE  # 2 of 5
    core.step(Message(VR, "n4", "n1", term=2))
    assert (core.role, core.leader) == (Role.LEADER, "n1")  # 3 of 5


def test_5_2_a_candidate_steps_down_for_a_leader_of_its_term() -> None:
    core = make(term=1)
    for _ in range(10):
        core.tick()
    assert core.role is Role.CANDIDATE and core.term == 2
    core.step(Message(A, "n2", "n1", term=2))
    assert (core.role, core.term, core.leader) == (Role.FOLLOWER, 2, "n2")


def test_5_2_a_split_vote_leads_to_a_new_election_in_a_new_term() -> None:
    core = make(term=1)
    for _ in range(10):
        core.tick()
    core.step(Message(VR, "n2", "n1", term=2, reject=True))
    assert core.role is Role.CANDIDATE
    for _ in range(10):
        core.tick()
    assert (core.role, core.term, core.vote) == (Role.CANDIDATE, 3, "n1")


def test_5_2_one_vote_per_term_first_come_first_served() -> None:
    core = make(term=1)
    core.step(Message(V, "n2", "n1", term=2))
    [rd] = batches(core)
    assert rd.hard_state == HardState(2, "n2", 0)  # the vote is durable before the answer
    assert [(m.type, m.dst, m.reject) for m in rd.messages] == [(VR, "n2", False)]
    core.step(Message(V, "n3", "n1", term=2))
    assert [(m.dst, m.reject) for m in sent(core)] == [("n3", True)]
    core.step(Message(V, "n2", "n1", term=2))  # a retransmitted request
    assert [(m.dst, m.reject) for m in sent(core)] == [("n2", False)]


def test_5_2_a_restarted_node_remembers_its_vote() -> None:
    c = Cluster(3, election_ticks=(10, 10), pre_vote=False)
    c.step(Message(V, "n2", "n1", term=1))
    c.crash("n1")
    n1 = c.restart("n1")
    assert (n1.term, n1.vote) == (1, "n2")
    c.take()
    c.step(Message(V, "n3", "n1", term=1))
    assert [m.reject for m in c.take(VR, dst="n3")] == [True]


def test_5_2_the_leader_sends_heartbeats() -> None:
    c = Cluster(3, heartbeat_ticks=3)
    c.elect("n1")
    c.tick("n1", times=2)
    assert not c.in_flight
    c.tick("n1")
    beats = c.take(A, src="n1")
    assert sorted(m.dst for m in beats) == ["n2", "n3"]
    assert all(not m.entries and m.term == 1 for m in beats)


# ---- §5.3 log replication -------------------------------------------------------------


def test_5_3_an_entry_commits_once_a_majority_holds_it_and_every_node_applies_it() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.cut("n1", "n3")
    c.propose("n1", b'"x"')
    c.stabilize()
    assert c["n1"].log.commit == 2  # the no-op and "x": n1 and n2 are a majority
    assert c.applied("n1") == [b'"x"'] and c.applied("n3") == []
    c.recover()
    c.run(ticks=6)  # a heartbeat round without progress, and the leader resends
    assert [c.applied(i) for i in c.ids] == [[b'"x"']] * 3


def test_5_3_the_consistency_check_refuses_a_missing_or_different_previous_entry() -> None:
    core = make(term=2, terms=(1, 1, 2))
    new = (Entry(2, 4, b"1"),)
    core.step(Message(A, "n2", "n1", term=2, index=4, log_term=2, entries=(Entry(2, 5, b"1"),)))
    core.step(Message(A, "n2", "n1", term=2, index=3, log_term=1, entries=new))
    assert terms(core) == [1, 1, 2]
    assert [(m.reject, m.index, m.hint, m.hint_term) for m in sent(core)] == [
        (True, 4, 3, 2),  # no entry 4: the hint is our last entry
        (True, 3, 2, 1),  # entry 3 has term 2: the hint is the last entry of term <= 1
    ]
    core.step(Message(A, "n2", "n1", term=2, index=3, log_term=2, entries=new))
    assert terms(core) == [1, 1, 2, 2]
    assert [(m.reject, m.index) for m in sent(core)] == [(False, 4)]


def test_5_3_heartbeats_are_checked_too() -> None:
    core = make(term=2, terms=(1, 1, 2))
    core.step(Message(A, "n2", "n1", term=2, index=5, log_term=2, commit=3))
    assert core.log.commit == 0  # a refused heartbeat commits nothing
    assert [m.reject for m in sent(core)] == [True]
    core.step(Message(A, "n2", "n1", term=2, index=3, log_term=1, commit=3))
    assert core.log.commit == 0
    assert [m.reject for m in sent(core)] == [True]
    core.step(Message(A, "n2", "n1", term=2, index=3, log_term=2, commit=3))
    assert core.log.commit == 3


def test_5_3_a_follower_commits_no_further_than_the_entries_it_was_sent() -> None:
    core = make(term=1, terms=(1, 1, 1, 1, 1))
    core.step(Message(A, "n2", "n1", term=1, index=2, log_term=1, commit=5))
    assert core.log.commit == 2  # entries 3-5 were not checked against the leader's log


def test_5_3_a_follower_truncates_from_the_first_conflict_only() -> None:
    core = make(term=2, terms=(1, 1, 2, 2, 2))
    core.step(Message(A, "n2", "n1", term=3, index=1, log_term=1,
                      entries=(Entry(1, 2, b"0"), Entry(3, 3, b"a"), Entry(3, 4, b"b"))))
    assert terms(core) == [1, 1, 3, 3]
    [rd] = batches(core)
    assert [e.index for e in rd.entries] == [3, 4]  # storage is rewritten from the conflict
    assert [(m.reject, m.index) for m in rd.messages] == [(False, 4)]


def test_5_3_an_append_that_conflicts_with_nothing_deletes_nothing() -> None:
    core = make(term=1, terms=(1, 1, 1, 1))
    core.step(Message(A, "n2", "n1", term=1, index=1, log_term=1, entries=(Entry(1, 2, b"0"),)))
    assert terms(core) == [1, 1, 1, 1]  # a delayed, shorter append
    [rd] = batches(core)
    assert rd.entries == ()
    assert [m.index for m in rd.messages] == [2]


def test_5_3_fast_backtracking_with_the_conflict_hint() -> None:
    """The end of §5.3: the follower answers with the term of the conflict, so the leader
    skips a whole term per round trip instead of one entry."""
    c = Cluster(3, pre_vote=False)
    c.restart("n1", HardState(3), [Entry(1, 1)] + [Entry(3, i) for i in range(2, 62)])
    c.restart("n2", HardState(2), [Entry(1, 1)] + [Entry(2, i) for i in range(2, 52)])
    c.restart("n3", HardState(3), [Entry(1, 1)])
    c.elect("n1")
    c.run(ticks=2)
    refused = [m for m in c.sent if m.type is AR and m.src == "n2" and m.reject]
    assert len(refused) == 1
    assert c.log("n2") == c.log("n1")


def test_5_5_appends_are_idempotent() -> None:
    core = make(term=1, terms=(1,))
    m = Message(A, "n2", "n1", term=1, index=1, log_term=1,
                entries=(Entry(1, 2, b"a"), Entry(1, 3, b"b")))
    core.step(m)
    first = sent(core)
    core.step(m)
    assert terms(core) == [1, 1, 1]
    assert sent(core) == first


# ---- §5.4 safety -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "log_term", "granted"),
    [(3, 1, False), (9, 1, False), (2, 2, False), (3, 2, True), (4, 2, True), (1, 3, True)],
)
def test_5_4_1_votes_only_for_a_log_at_least_as_up_to_date(index: int, log_term: int,
                                                          granted: bool) -> None:
    core = make(term=2, terms=(1, 1, 2))
    core.step(Message(V, "n2", "n1", term=3, index=index, log_term=log_term))
    assert [m.reject for m in sent(core)] == [not granted]
    assert core.vote == ("n2" if granted else None)


def test_5_4_2_entries_of_earlier_terms_are_not_committed_by_counting() -> None:
    core = make(term=2, terms=(1, 2))
    become_leader(core)
    assert terms(core) == [1, 2, 3]
    core.step(Message(AR, "n2", "n1", term=3, index=2))
    assert core.log.commit == 0  # entry 2 is on a majority, but it is of term 2
    core.step(Message(AR, "n2", "n1", term=3, index=3))
    assert core.log.commit == 3  # entry 3 is of this term: 2 commits with it


def figure_8(core_class: type[RaftCore] = RaftCore) -> Cluster:
    """Figure 8 of the paper, replayed step by step; the cluster checks safety throughout."""
    c = Cluster(5, core_class=core_class, pre_vote=False, check_quorum=False,
                max_msg_entries=1)
    one, a, b = Entry(1, 1, b"", EntryKind.NOOP), Entry(2, 2, b'"a"'), Entry(3, 2, b'"b"')
    c.restart("n1", HardState(3, None, 1), [one, a])  # (a) n1 led term 2, reached n2
    c.restart("n2", HardState(3, None, 1), [one, a])
    c.restart("n3", HardState(3, "n5", 1), [one])  # (b) n5 won term 3 with n3, n4
    c.restart("n4", HardState(3, "n5", 1), [one])
    c.restart("n5", HardState(3, "n5", 1), [one, b])
    c.crash("n5")
    while c["n1"].role is Role.FOLLOWER:  # (c) n1 wins term 4 ...
        c.tick("n1")
    c.deliver()
    c.deliver()
    assert (c["n1"].role, c["n1"].term) == (Role.LEADER, 4)
    c.take(A, dst="n4")
    c.deliver()  # ... n2 takes the no-op at 3; n3 refuses the probe at 2 ...
    c.deliver()  # ... and is sent entry 2 alone ...
    c.deliver()  # ... takes it ...
    c.deliver()  # ... and n1 hears so: entry 2 (of term 2) is on n1, n2 and n3, a majority
    assert c["n1"].progress() == {"n2": 3, "n3": 2, "n4": 0, "n5": 0}
    c.crash("n1")  # (d) n1 fails before its own entry (the no-op at 3) reaches a majority
    c.take(src="n1")
    c.restart("n5")
    while c.leader() is None:  # n5 wins term 5 with n3 and n4
        c.tick("n5")
        c.stabilize()
    c.restart("n1")
    c.run(3)
    return c


def test_5_4_2_figure_8_an_old_entry_on_a_majority_is_not_yet_committed() -> None:
    c = figure_8()
    assert (c.leader(), c["n5"].term) == ("n5", 5)
    assert [c.applied(i) for i in c.ids] == [[b'"b"']] * 5  # "a" was never committed


def test_5_4_2_a_new_leader_appends_a_no_op_at_once() -> None:
    c = Cluster(3)
    c.elect("n2")
    [noop] = c.log("n2")
    assert (noop.kind, noop.term, noop.index) == (EntryKind.NOOP, c["n2"].term, 1)
    c.run(ticks=2)
    assert all(c[i].log.commit == 1 and c.applied(i) == [] for i in c.ids)


# ---- the election timer ------------------------------------------------------------------


def test_5_2_the_timer_restarts_on_an_append_from_the_leader() -> None:
    core = make(term=1)
    for _ in range(9):
        core.tick()
    core.step(Message(A, "n2", "n1", term=1))
    for _ in range(9):
        core.tick()
    assert core.role is Role.FOLLOWER
    core.tick()
    assert (core.role, core.term) == (Role.CANDIDATE, 2)


def test_5_2_the_timer_restarts_when_a_vote_is_granted() -> None:
    core = make(term=1)
    for _ in range(9):
        core.tick()
    core.step(Message(V, "n2", "n1", term=2))
    assert core.vote == "n2"
    for _ in range(9):
        core.tick()
    assert core.role is Role.FOLLOWER
    core.tick()
    assert (core.role, core.term) == (Role.CANDIDATE, 3)


@pytest.mark.parametrize("what", ["refused vote", "stale append", "granted pre-vote"])
def test_5_2_the_timer_does_not_restart_on_anything_else(what: str) -> None:
    core = make(term=2, terms=(1, 2), pre_vote=what == "granted pre-vote")
    for _ in range(9):
        core.tick()
    if what == "refused vote":
        core.step(Message(V, "n2", "n1", term=3, index=1, log_term=1))
    elif what == "stale append":
        core.step(Message(A, "n2", "n1", term=1))
    else:
        core.step(Message(MsgType.PRE_VOTE, "n2", "n1", term=3, index=2, log_term=2))
    [resp] = sent(core)
    assert resp.reject is (what == "refused vote")  # a stale append is told the term
    core.tick()
    assert core.role is not Role.FOLLOWER


# ---- pre-vote (dissertation §9.6) and check-quorum (§6.2, §4.2.3) ----------------------


def test_9_6_pre_vote_keeps_an_isolated_node_from_raising_its_term() -> None:
    c = Cluster(3, pre_vote=True)
    c.elect("n1")
    c.isolate("n3")
    c.run(ticks=100)
    assert (c["n3"].term, c["n3"].role) == (1, Role.PRE_CANDIDATE)
    c.recover()
    c.run(ticks=10)
    assert (c.leader(), c["n1"].term, c["n3"].role) == ("n1", 1, Role.FOLLOWER)


def test_9_6_without_pre_vote_a_returning_node_disrupts_the_leader() -> None:
    c = Cluster(3, pre_vote=False)
    c.elect("n1")
    c.isolate("n3")
    c.run(ticks=100)
    assert c["n3"].term > 5
    c.recover()
    c.run(ticks=30)
    assert c["n1"].term == c["n3"].term > 5  # the cluster had to move to n3's term


def test_9_6_a_pre_vote_changes_nothing_on_the_voter() -> None:
    core = make(term=2, terms=(1, 2))
    core.step(Message(MsgType.PRE_VOTE, "n2", "n1", term=3, index=2, log_term=2))
    assert [(m.type, m.reject, m.term) for m in sent(core)] == [
        (MsgType.PRE_VOTE_RESP, False, 3)]
    assert (core.term, core.vote) == (2, None)


def test_9_6_a_pre_vote_needs_an_up_to_date_log() -> None:
    core = make(term=2, terms=(1, 2))
    core.step(Message(MsgType.PRE_VOTE, "n2", "n1", term=3, index=5, log_term=1))
    assert [m.reject for m in sent(core)] == [True]


def test_9_6_a_won_pre_vote_starts_the_real_election() -> None:
    core = make(term=4, pre_vote=True)
    for _ in range(10):
        core.tick()
    assert (core.role, core.term) == (Role.PRE_CANDIDATE, 4)
    assert {(m.type, m.term) for m in sent(core)} == {(MsgType.PRE_VOTE, 5)}
    core.step(Message(MsgType.PRE_VOTE_RESP, "n2", "n1", term=5))
    assert (core.role, core.term, core.vote) == (Role.CANDIDATE, 5, "n1")
    assert {(m.type, m.term) for m in sent(core)} == {(V, 5)}


def test_6_2_check_quorum_an_isolated_leader_steps_down() -> None:
    c = Cluster(3, election_ticks=(10, 20))
    c.elect("n1")
    c.run(ticks=40)
    assert c["n1"].role is Role.LEADER  # it hears from a majority
    c.isolate("n1")
    c.run(20, "n1")
    assert (c["n1"].role, c["n1"].term, c["n1"].leader) == (Role.FOLLOWER, 1, None)


def test_6_2_without_check_quorum_an_isolated_leader_stays() -> None:
    c = Cluster(3, check_quorum=False)
    c.elect("n1")
    c.isolate("n1")
    c.run(40, "n1")
    assert c["n1"].role is Role.LEADER


def test_4_2_3_a_follower_that_hears_a_leader_ignores_vote_requests() -> None:
    c = Cluster(3, pre_vote=False, election_ticks=(10, 10))
    c.elect("n1")
    c.step(Message(V, "n3", "n2", term=5, index=9, log_term=4))
    assert (c["n2"].term, c["n2"].vote, c.take(VR)) == (1, "n1", [])
    c.tick("n2", times=10)  # no word from the leader for an election timeout
    c.take()
    c.step(Message(V, "n3", "n2", term=5, index=9, log_term=4))
    assert (c["n2"].term, c["n2"].vote) == (5, "n3")


# ---- batching and pipelining (dissertation §10.2.2) ------------------------------------


def test_10_2_appends_carry_at_most_max_msg_entries() -> None:
    c = Cluster(3, max_msg_entries=3)
    c.elect("n1")
    c.isolate("n3")
    for i in range(10):
        c.propose("n1", b"%d" % i)
    c.stabilize()
    c.recover()
    c.sent.clear()
    c.run(ticks=4)
    sizes = [len(m.entries) for m in c.sent if m.type is A and m.dst == "n3"]
    assert max(sizes) == 3
    assert c.log("n3") == c.log("n1")


def test_10_2_appends_carry_at_most_max_msg_bytes_but_at_least_one_entry() -> None:
    c = Cluster(3, max_msg_bytes=300)
    c.elect("n1")
    c.isolate("n3")
    for data in (b'"' + b"x" * 100 + b'"',) * 6 + (b'"' + b"y" * 1000 + b'"',):
        c.propose("n1", data)
    c.stabilize()
    c.recover()
    c.sent.clear()
    c.run(ticks=4)
    appends = [m for m in c.sent if m.type is A and m.dst == "n3" and m.entries]
    for m in appends:
        assert len(m.entries) == 1 or sum(len(e.data) + 32 for e in m.entries) <= 300
    assert max(len(m.entries) for m in appends) == 2
    assert c.log("n3") == c.log("n1")


def test_10_2_a_follower_that_keeps_up_gets_several_appends_in_flight() -> None:
    c = Cluster(3, max_msg_entries=1, max_inflight=4)
    c.elect("n1")
    for i in range(10):
        c.propose("n1", b"%d" % i)
    to_n2 = c.take(A, dst="n2")
    assert [len(m.entries) for m in to_n2] == [1, 1, 1, 1]  # no more until acked
    c.step(Message(AR, "n2", "n1", term=1, index=to_n2[1].index + 1))
    assert len(c.take(A, dst="n2")) == 2  # two acked, two more sent
    c.stabilize()
    c.run(ticks=2)
    assert c.log("n2") == c.log("n1")


def test_10_2_a_follower_being_probed_gets_one_append_at_a_time() -> None:
    leader = make(term=1, max_msg_entries=1, max_inflight=4)
    become_leader(leader)  # its followers are probed until they first answer
    for i in range(5):
        leader.propose(b"%d" % i)
    assert [m.dst for m in sent(leader) if m.type is A] == []  # the no-op is unanswered
    leader.step(Message(AR, "n2", "n1", term=2, index=1))
    assert [len(m.entries) for m in sent(leader) if m.dst == "n2"] == [1, 1, 1, 1]


# ---- clients: routing, sessions (dissertation §6.2, §6.3) -------------------------------


def test_6_2_a_follower_forwards_proposals_to_the_leader_who_acknowledges() -> None:
    c = Cluster(3)
    c.elect("n1")
    seq = c.propose("n2", b'"x"')
    [fwd] = c.take()
    assert (fwd.type, fwd.dst, [(e.client, e.seq, e.data) for e in fwd.entries]) == (
        MsgType.PROPOSE, "n1", [(c["n2"].cfg.session, seq, b'"x"')])
    c.step(fwd)
    [ack] = c.take(MsgType.PROPOSE_RESP)
    assert (ack.dst, ack.reject, ack.hint, ack.context) == ("n2", False, seq, fwd.entries[0].client)
    c.stabilize()
    c.run(ticks=2)
    assert [c.applied(i) for i in c.ids] == [[b'"x"']] * 3
    assert c["n2"].pending_proposals == 0


def test_6_2_a_node_that_is_not_leader_redirects_to_the_leader_it_knows() -> None:
    c = Cluster(5, pre_vote=False, check_quorum=False)
    c.elect("n1")
    c.isolate("n1")
    c.isolate("n2")  # n2 will keep believing in n1
    c.elect("n3")
    c.recover()
    c.isolate("n2")
    c.run(2, "n3")  # n1 learns of n3
    assert (c["n1"].leader, c["n2"].leader) == ("n3", "n1")
    c.recover()
    c.sent.clear()
    c.propose("n2", b'"y"')
    c.stabilize()
    route = [(m.type.name, m.src, m.dst, m.reject) for m in c.sent
             if m.type in (MsgType.PROPOSE, MsgType.PROPOSE_RESP)]
    assert route == [("PROPOSE", "n2", "n1", False), ("PROPOSE_RESP", "n1", "n2", True),
                     ("PROPOSE", "n2", "n3", False), ("PROPOSE_RESP", "n3", "n2", False)]
    c.run(2)
    assert [c.applied(i) for i in c.ids] == [[b'"y"']] * 5


def test_6_3_a_retried_proposal_is_appended_once() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n2", b'"x"')
    [fwd] = c.take()
    for _ in range(3):
        c.step(fwd)
    c.stabilize()
    c.run(ticks=2)
    assert c.applied("n1") == [b'"x"']
    assert sum(1 for e in c.log("n1") if e.client) == 1


def test_6_3_a_session_appends_in_order_and_reports_a_gap() -> None:
    leader = make(term=1)
    become_leader(leader)
    later = Entry(0, 0, b"3", EntryKind.NORMAL, "c", 3)
    leader.step(Message(MsgType.PROPOSE, "n2", "n1", entries=(later,)))
    [resp] = sent(leader)
    assert (resp.hint, resp.index) == (0, 1)  # holds nothing of "c"; wants seq 1 next
    assert leader.log.last_index == 1
    first = tuple(Entry(0, 0, b"%d" % s, EntryKind.NORMAL, "c", s) for s in (1, 2, 3))
    leader.step(Message(MsgType.PROPOSE, "n2", "n1", entries=first))
    assert [(e.seq, e.term) for e in leader.log.entries_from(2)] == [(1, 2), (2, 2), (3, 2)]
    assert [(m.hint, m.index) for m in sent(leader) if m.type is MsgType.PROPOSE_RESP] == [
        (3, 0)]


def test_6_3_a_proposal_survives_a_change_of_leader_and_commits_once() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.cut("n1", "n3")
    c.propose("n3", b'"z"')
    c.stabilize()  # the PROPOSE to n1 is lost; n3 retries it with the new leader
    c.crash("n1")
    c.run(ticks=60)
    c.restart("n1")
    c.recover()
    c.run(ticks=20)
    assert c.leader() in ("n2", "n3")
    assert [c.applied(i) for i in c.ids] == [[b'"z"']] * 3


def test_5_2_a_one_node_cluster_elects_itself_and_commits_alone() -> None:
    c = Cluster(["solo"])
    c.tick(times=20)
    assert c["solo"].role is Role.LEADER
    c.propose("solo", b'"only"')
    assert c.applied("solo") == [b'"only"']
    assert c.sent == []
