"""The core's contract with its driver (the Ready protocol, config, restarts), and one
regression test per core bug that the simulator found."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from conflux_raft import (
    ConfigError,
    CoreConfig,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MsgType,
    RaftCore,
    Role,
)
from conflux_raft.core import SessionTable, owner_of
from conflux_raft.testing import Cluster, SafetyViolation

IDS = ("n1", "n2", "n3")
A, AR = MsgType.APPEND, MsgType.APPEND_RESP
P, PR = MsgType.PROPOSE, MsgType.PROPOSE_RESP


def make(node: str = "n1", term: int = 0, terms: tuple[int, ...] = (), **options: Any) -> RaftCore:
    options = {"election_ticks": (10, 10), "pre_vote": False, **options}
    entries = [Entry(t, i, b"0") for i, t in enumerate(terms, start=1)]
    return RaftCore(CoreConfig(node, IDS, f"{node}.1", **options), random.Random(0),
                    HardState(term), entries)


def sent(core: RaftCore) -> list[Message]:
    out: list[Message] = []
    while core.has_ready():
        rd = core.ready()
        out += rd.messages
        core.advance(rd)
    return out


def leader(**options: Any) -> RaftCore:
    core = make(term=1, **options)
    while core.role is Role.FOLLOWER:
        core.tick()
    core.step(Message(MsgType.VOTE_RESP, "n2", "n1", term=2))
    assert core.role is Role.LEADER
    sent(core)
    return core


def follower_of_n1(**options: Any) -> RaftCore:
    core = make("n2", term=1, **options)
    core.step(Message(A, "n1", "n2", term=1))
    sent(core)
    return core


# ---- the Ready protocol ------------------------------------------------------------------


def test_entries_are_handed_over_once_and_committed_ones_until_advance() -> None:
    core = RaftCore(CoreConfig("solo", ("solo",), "s"), random.Random(0))
    while core.role is not Role.LEADER:
        core.tick()
    core.propose(b'"a"')
    rd = core.ready()
    assert [e.kind for e in rd.entries] == [EntryKind.NOOP, EntryKind.NORMAL]
    assert [e.index for e in rd.committed] == [1, 2]
    assert rd.hard_state == HardState(1, "solo", 2)
    again = core.ready()
    assert again.entries == () and again.hard_state is None
    assert again.committed == rd.committed  # not yet acknowledged
    core.advance(again)
    assert not core.has_ready()
    assert not core.ready()


def test_a_core_restarts_from_what_was_persisted() -> None:
    c = Cluster(3)
    c.elect("n1")
    for i in range(3):
        c.propose("n2", b"%d" % i)
    c.run(2)
    storage: MemoryStorage = c.hosts["n2"].storage
    hard_state, entries = storage.load()
    assert (hard_state.term, hard_state.commit, len(entries)) == (1, 4, 4)
    core = RaftCore(c["n2"].cfg, random.Random(1), hard_state, entries)
    assert (core.term, core.vote, core.log.commit, core.log.last_index) == (1, "n1", 4, 4)
    assert core.role is Role.FOLLOWER and core.leader is None
    rd = core.ready()  # the state machine is rebuilt from the log
    assert [e.index for e in rd.committed] == [1, 2, 3, 4]


@pytest.mark.parametrize(("option", "value"), [
    ("id", ""), ("voters", ()), ("voters", ("a", "a")), ("election_ticks", (0, 5)),
    ("election_ticks", (9, 5)), ("heartbeat_ticks", 0), ("heartbeat_ticks", 10),
    ("max_msg_entries", 0), ("max_msg_bytes", 0), ("max_inflight", 0),
])
def test_config_is_validated(option: str, value: Any) -> None:
    fields: dict[str, Any] = {"id": "a", "voters": ("a", "b"), "session": "s", option: value}
    with pytest.raises(ConfigError) as info:
        RaftCore(CoreConfig(**fields), random.Random(0))
    assert isinstance(info.value, ValueError)


def test_progress_is_the_leaders_match_index_per_follower() -> None:
    c = Cluster(3)
    assert c["n1"].progress() == {}
    c.elect("n1")
    c.propose("n1", b"1")
    c.stabilize()
    assert c["n1"].progress() == {"n2": 2, "n3": 2}
    assert c["n2"].progress() == {}


def test_pending_proposals_count_until_seen_committed() -> None:
    c = Cluster(3)
    c.elect("n1")
    c["n2"].propose(b"1")
    c["n2"].propose(b"2")
    c.flush("n2")  # one batch
    pending = [c["n2"].pending_proposals]
    while c.in_flight:  # no tick: nothing waits for a heartbeat
        c.deliver()
        pending.append(c["n2"].pending_proposals)
    # PROPOSE to the leader, APPEND to the followers, their acks, then the commit index:
    # a follower's proposal is seen committed after two round trips.
    assert pending[:5] == [2, 2, 2, 2, 0]
    assert c.applied("n2") == c.applied("n1") == c.applied("n3") == [b"1", b"2"]


def test_the_commit_index_reaches_followers_at_once_one_message_each() -> None:
    c = Cluster(3)
    c.elect("n1")
    for i in range(10):
        c["n1"].propose(b"%d" % i)
    c.flush("n1")
    c.deliver()  # the entries reach both followers
    c.deliver()  # their acks reach the leader, which commits and tells them at once
    commits = c.take(MsgType.APPEND, src="n1")
    assert sorted(m.dst for m in commits) == ["n2", "n3"]  # coalesced: one per follower
    assert all(not m.entries and m.commit == 11 for m in commits)
    for m in commits:
        c.step(m)
    assert c["n2"].log.commit == c["n3"].log.commit == 11


def test_a_propose_mixing_sessions_is_ignored() -> None:
    core = leader()
    mixed = (Entry(0, 0, b"1", EntryKind.NORMAL, "a", 1),
             Entry(0, 0, b"2", EntryKind.NORMAL, "b", 1))
    core.step(Message(P, "n2", "n1", entries=mixed))
    assert core.log.last_index == 1
    assert [m for m in sent(core) if m.type is PR] == []


# ---- regressions: bugs the simulator found ------------------------------------------------


def test_proposals_go_one_batch_per_round_trip() -> None:
    """Batches sent back to back were reordered, refused as gaps, and every refusal resent
    every batch again: message counts grew without bound (seeds 17 and 921)."""
    core = follower_of_n1(max_msg_entries=3)
    for i in range(10):
        core.propose(b"%d" % i)
    [batch] = sent(core)
    assert (batch.type, [e.seq for e in batch.entries]) == (P, [1, 2, 3])
    core.step(Message(PR, "n1", "n2", term=1, context="n2.1", hint=3))
    [batch] = sent(core)
    assert [e.seq for e in batch.entries] == [4, 5, 6]
    core.step(Message(PR, "n1", "n2", term=1, context="n2.1", hint=3, index=4))  # a gap at 4
    assert [[e.seq for e in m.entries] for m in sent(core)] == [[4, 5, 6]]


def test_a_refusal_without_a_redirect_waits_for_the_resend_timer() -> None:
    core = follower_of_n1(max_msg_entries=1)
    for i in range(5):
        core.propose(b"%d" % i)
    assert len(sent(core)) == 1
    for _ in range(3):  # one refusal per batch sent; none may resend everything
        core.step(Message(PR, "n1", "n2", term=1, reject=True, context="n2.1", payload=None))
        assert sent(core) == []
    def beat() -> list[list[int]]:
        core.step(Message(A, "n1", "n2", term=1))
        core.tick()
        return [[e.seq for e in m.entries] for m in sent(core) if m.type is P]

    assert [beat() for _ in range(9)] == [[]] * 9
    assert beat() == [[1]]


def test_what_a_leader_acked_is_resent_when_the_term_changes() -> None:
    """An ack only says the leader's log held the entry: a later term may have dropped it,
    even if the same node leads again (liveness, found by the simulator)."""
    core = follower_of_n1()
    core.propose(b'"x"')
    assert len(sent(core)) == 1
    core.step(Message(PR, "n1", "n2", term=1, context="n2.1", hint=1))
    for _ in range(30):
        core.step(Message(A, "n1", "n2", term=1))
        core.tick()
    assert [m.type for m in sent(core)] == [AR] * 30
    core.step(Message(A, "n1", "n2", term=3))
    assert [m.type for m in sent(core)] == [AR, P]


def test_a_stale_refusal_does_not_lower_match() -> None:
    """A refusal sent before an ack but delivered after it used to lower match, and under
    reordering replication never caught up again (seed 277)."""
    core = leader(max_msg_entries=1)
    for i in range(5):
        core.propose(b"%d" % i)
    sent(core)
    core.step(Message(AR, "n2", "n1", term=2, index=4))
    assert core.progress()["n2"] == 4
    sent(core)
    core.step(Message(AR, "n2", "n1", term=2, index=4, reject=True, hint=2, hint_term=2))
    assert core.progress()["n2"] == 4
    [probe] = [m for m in sent(core) if m.dst == "n2"]
    assert (probe.index, [e.index for e in probe.entries]) == (2, [3])
    core.step(Message(AR, "n2", "n1", term=2, index=3))
    assert [m.index for m in sent(core) if m.dst == "n2"] == [4, 5]


def test_an_ack_lets_the_leader_send_what_comes_next_at_once() -> None:
    """has_ready() did not see entries waiting for a follower that just left probing, so
    they waited for the next heartbeat (seed 277: one entry per heartbeat)."""
    core = leader(max_msg_entries=1, max_inflight=8)
    for i in range(5):
        core.propose(b"%d" % i)
    core.step(Message(AR, "n3", "n1", term=2, index=1))
    sent(core)
    core.step(Message(AR, "n2", "n1", term=2, index=1))  # changes nothing but n2's state
    assert core.has_ready()
    assert [m.index for m in sent(core) if m.dst == "n2"] == [1, 2, 3, 4, 5]


def test_nothing_happens_before_the_ticks_until_due_have_passed() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.stabilize()
    for node in ("n1", "n2"):  # a leader (heartbeat) and a follower (election timeout)
        core = c[node]
        for _ in range(3):
            due = core.ticks_until_due()
            assert due >= 1
            for _ in range(due - 1):
                core.tick()
                assert not core.has_ready(), f"{node} acted before its due tick"
            role, term = core.role, core.term
            core.tick()
            assert core.has_ready() or (core.role, core.term) != (role, term)
            c.flush(node)
            c.in_flight.clear()  # what it sent is lost: the next timeout counts again


def test_an_ack_from_an_older_term_is_not_trusted() -> None:
    # Seed 8245: n4 acked seqs up to 7 in term 14, lost them, led again in term 18; its
    # delayed term-14 ack then made the proposer skip seqs the leader never held.
    c = Cluster(3)
    c.elect("n1")
    c["n2"].propose(b"1")
    c.flush("n2")
    q = c["n2"].proposals
    term = c["n2"].term
    stale = Message(PR, "n1", "n2", term=term - 1, context=q.session, hint=5)
    c.step(stale)
    assert q.acked == 0
    c.step(replace(stale, term=term, hint=1))
    assert q.acked == 1


def test_a_leader_heard_again_in_a_new_term_takes_the_proposals_back() -> None:
    # A redirect moved n2's proposals to n3; n2 then learnt n1 again, in a new term,
    # from an append (the vote was lost). The proposals stayed with n3, which had crashed.
    core = follower_of_n1()
    core.propose(b"1")
    sent(core)
    core.step(Message(PR, "n1", "n2", term=1, reject=True, context="n2.1", payload="n3"))
    assert core.proposals.target == "n3"
    core.step(Message(A, "n1", "n2", term=2))
    assert core.proposals.target == "n1"
    assert [m.dst for m in sent(core) if m.type is P] == ["n1"]


def test_a_follower_that_is_gone_gets_heartbeats_not_a_full_append_each_time() -> None:
    # The probe was unpaused by every heartbeat: a dead follower received a full-size
    # append each heartbeat (about 1.3 MiB/s into its inbox).
    c = Cluster(3)
    c.elect("n1")
    c.crash("n3")
    for i in range(20):
        c["n1"].propose(b'"%d"' % i)
    c.stabilize()
    c.in_flight.clear()
    c.sent.clear()
    for _ in range(10):
        c.tick("n1", times=2)  # a heartbeat each
        c.stabilize()
    to_n3 = [m for m in c.sent if m.dst == "n3" and m.type is A]
    assert len(to_n3) >= 5
    assert sum(1 for m in to_n3 if m.entries) <= 1
    c.restart("n3")
    c.run(4)
    assert c["n3"].log.last_index == c["n1"].log.last_index  # and it catches up when back


# ---- sessions stay bounded across restarts --------------------------------------------


def test_a_nodes_new_session_supersedes_its_old_ones() -> None:
    # Every start added a session for good: 30 restarts of one node left 31 of its
    # sessions in the leader's table and in every snapshot.
    c = Cluster(3)
    c.elect("n1")
    for _ in range(30):
        c.propose("n2", b'"x"')
        c.run(ticks=2)  # a heartbeat tells a restarted n2 who leads
        c.crash("n2")
        c.restart("n2")
    c.propose("n2", b'"last"')
    c.run(ticks=2)
    leader = c["n1"]
    assert c.applied("n1") == [b'"x"'] * 30 + [b'"last"']
    assert len(leader.sessions) == 1  # n2's newest: n1 and n3 never proposed
    mine = [s for s, _ in leader.sessions_at(leader.log.applied) if s.startswith("n2.")]
    assert mine == [c["n2"].cfg.session]


class _CarelessSessions(SessionTable):
    """Drops a superseded session, but then takes what still arrives from it as new."""

    def superseding(self, client: str) -> int:
        return 0

    def _live(self, client: str) -> bool:
        o = owner_of(client)
        known = self._owners.get(o[0]) if o is not None else None
        if o is not None and known is not None and o[1] < known[0]:
            self._top.pop(known[1], None)
            self._owners[o[0]] = (o[1], client)
            return True
        return super()._live(client)


class _CarelessCore(RaftCore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions = _CarelessSessions()


def _delayed_proposal_of_a_dead_incarnation(core_class: type[RaftCore]) -> list[bytes]:
    c = Cluster(3, core_class=core_class)
    c.elect("n1")
    c.propose("n2", b'"a"')
    stale = [m for m in c.in_flight if m.type is MsgType.PROPOSE]
    c.stabilize()
    assert c.applied("n1") == [b'"a"']
    c.crash("n2")
    c.restart("n2")
    c.propose("n2", b'"b"')
    c.run(ticks=2)
    for m in stale:  # a copy the network held back
        c.step(m)
    c.run(ticks=2)
    assert c.applied("n3") == c.applied("n1")
    return c.applied("n1")


def test_a_delayed_proposal_of_a_dead_incarnation_is_refused() -> None:
    # Dropping a superseded session is safe only if what still arrives from it is
    # refused, not taken as new: else a committed proposal is appended twice.
    assert _delayed_proposal_of_a_dead_incarnation(RaftCore) == [b'"a"', b'"b"']
    # and the check can fail: a table that takes the dead session as new appends twice
    with pytest.raises(SafetyViolation, match=r"holds \(n2\.1, 1\) at 2 and 4"):
        _delayed_proposal_of_a_dead_incarnation(_CarelessCore)


def test_a_superseded_session_is_told_so_and_its_proposer_knows() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.crash("n2")
    c.restart("n2")
    c.propose("n2", b'"new"')
    c.run(ticks=2)  # the leader now holds n2.2
    old = Entry(0, 0, b'"old"', EntryKind.NORMAL, "n2.1", 1)
    c.step(Message(MsgType.PROPOSE, "n2", "n1", term=c["n1"].term, entries=(old,)))
    [answer] = c.take(MsgType.PROPOSE_RESP, src="n1", dst="n2")
    assert answer.reject and answer.context == "n2.1" and answer.hint_term == 2
    assert b'"old"' not in c.applied("n1")
    # the proposer of a session told it is superseded records by what
    c.step(replace(answer, context=c["n2"].cfg.session, hint_term=3))
    assert c["n2"].superseded_by == 3
