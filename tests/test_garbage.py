"""The core fed arbitrary well-typed messages, as a forged or corrupted peer could send:
it never raises, and its own invariants hold (Hypothesis)."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from conflux_raft import Entry, EntryKind, Message, MsgType, RaftCore
from conflux_raft.testing import Cluster

small = st.integers(0, 8)
entries = st.lists(st.builds(Entry, term=small, index=st.integers(0, 12), data=st.just(b"1"),
                             kind=st.sampled_from(EntryKind), client=st.sampled_from(["", "n2.1"]),
                             seq=small), max_size=4)
messages = st.builds(
    Message, type=st.sampled_from(MsgType), src=st.sampled_from(["n2", "n3"]),
    dst=st.just("n1"), term=small, log_term=small, index=st.integers(0, 12),
    commit=st.integers(0, 14), entries=entries.map(tuple), reject=st.booleans(), hint=small,
    hint_term=small, context=st.sampled_from(["", "n1.1"]), payload=st.none())


def check(core: RaftCore) -> None:
    log = core.log.entries_from(1)
    assert [e.index for e in log] == list(range(1, len(log) + 1)), "log not contiguous"
    assert all(a.term <= b.term for a, b in pairwise(log)), "terms go back"
    assert all(e.term <= core.term for e in log), "an entry from a future term"
    assert core.log.applied <= core.log.commit <= core.log.last_index


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["leader", "follower"]), st.lists(messages, max_size=12))
def test_arbitrary_messages_never_break_the_core(role: str, msgs: list[Message]) -> None:
    c = Cluster(3, check=False)
    if role == "leader":
        c.elect("n1")
    else:
        c.elect("n2")
    c.propose("n1", b"1")
    c.stabilize()
    core = c["n1"]
    for m in msgs:
        c.step(m)  # steps, then runs the Ready protocol (which checks the apply order)
        check(core)
    c.in_flight.clear()
