"""RaftLog, and the majority arithmetic of votes and commits: unit and property tests."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import logs

from conflux_raft import CoreConfig, Entry, HardState, Message, MsgType, RaftCore, Role
from conflux_raft.core import RaftLog


def log_of(*terms: int) -> RaftLog:
    return RaftLog([Entry(t, i, b"0") for i, t in enumerate(terms, start=1)])


# ---- RaftLog ------------------------------------------------------------------------


def test_empty_log() -> None:
    log = RaftLog()
    assert (log.last_index, log.last_term, log.commit, log.applied) == (0, 0, 0, 0)
    assert log.term_at(0) == 0
    assert log.term_at(1) is None
    assert log.matches(0, 0)
    assert log.entries_from(1) == []


def test_term_at_and_matches() -> None:
    log = log_of(1, 1, 2)
    assert [log.term_at(i) for i in range(5)] == [0, 1, 1, 2, None]
    assert log.matches(3, 2)
    assert not log.matches(3, 1)
    assert not log.matches(4, 2)
    assert log.entry(2) == Entry(1, 2, b"0")


def test_a_log_must_be_contiguous() -> None:
    with pytest.raises(ValueError, match="index 3"):
        RaftLog([Entry(1, 1), Entry(1, 3)])


def test_offset_log() -> None:
    log = RaftLog([Entry(3, 6), Entry(3, 7)], offset=5, offset_term=2)
    assert (log.last_index, log.last_term, log.commit) == (7, 3, 5)
    assert log.term_at(5) == 2
    assert log.term_at(4) is None
    assert log.entries_from(1) == [Entry(3, 6), Entry(3, 7)]


def test_truncate_after_drops_the_tail() -> None:
    log = log_of(1, 1, 2, 2)
    log.truncate_after(2)
    assert log.last_index == 2
    log.append([Entry(3, 3)])
    assert log.term_at(3) == 3


def test_truncating_a_committed_entry_is_refused() -> None:
    log = log_of(1, 1, 2)
    log.commit = 2
    log.truncate_after(2)
    with pytest.raises(AssertionError, match="committed"):
        log.truncate_after(1)


def test_slice_limits_count_and_bytes_but_returns_at_least_one() -> None:
    log = RaftLog([Entry(1, i, b"x" * 10) for i in range(1, 11)])  # 42 bytes each
    assert [e.index for e in log.slice(2, 11, 3, 1 << 20)] == [2, 3, 4]
    assert [e.index for e in log.slice(2, 11, 100, 100)] == [2, 3]
    assert [e.index for e in log.slice(2, 11, 100, 1)] == [2]
    assert [e.index for e in log.slice(9, 100, 100, 1 << 20)] == [9, 10]
    assert log.slice(11, 20, 5, 100) == []


@given(logs(), st.integers(0, 40), st.integers(1, 8), st.integers(1, 300))
def test_slice_property(entries: list[Entry], lo: int, count: int, size: int) -> None:
    log = RaftLog(entries)
    lo = min(max(lo, 1), log.last_index + 1)
    out = log.slice(lo, log.last_index + 1, count, size)
    assert out == entries[lo - 1 : lo - 1 + len(out)]
    assert len(out) <= count
    if lo <= log.last_index:
        assert out, "at least one entry when one is there"
        assert len(out) == 1 or sum(len(e.data) + 32 for e in out) <= size
        end = lo + len(out)
        if len(out) < count and end <= log.last_index:  # and no longer than the bounds say
            assert sum(len(e.data) + 32 for e in entries[lo - 1 : end]) > size


@given(logs(), st.integers(0, 40), st.integers(0, 40), st.integers(0, 40))
def test_size_counts_data_and_overhead_after_appends_and_truncations(
    entries: list[Entry], cut: int, lo: int, hi: int
) -> None:
    log = RaftLog(entries[:cut])
    log.truncate_after(min(cut, len(entries)) // 2)
    log.append(entries[min(cut, len(entries)) // 2 : len(entries)])
    assert log.entries_from(1) == entries
    lo, hi = sorted((min(max(lo, 1), len(entries) + 1), min(max(hi, 1), len(entries) + 1)))
    assert log.size(lo, hi) == sum(len(e.data) + 32 for e in entries[lo - 1 : hi - 1])


@given(logs(), st.integers(0, 40), st.integers(0, 8))
def test_is_up_to_date_is_the_paper_order(entries: list[Entry], index: int, term: int) -> None:
    """§5.4.1: compare last terms; with equal last terms, the longer log is more up to date."""
    log = RaftLog(entries)
    expected = (term, index) >= (log.last_term, log.last_index)
    assert log.is_up_to_date(index, term) is expected


@given(logs(), st.integers(0, 40), st.integers(0, 8))
def test_conflict_hint_is_the_last_index_at_or_below_the_term(
    entries: list[Entry], index: int, term: int
) -> None:
    log = RaftLog(entries)
    hint = log.conflict_hint(index, term)
    assert 0 <= hint <= min(index, log.last_index)
    assert (log.term_at(hint) or 0) <= term
    for i in range(hint + 1, min(index, log.last_index) + 1):
        assert (log.term_at(i) or 0) > term


@given(logs(), logs())
def test_log_matching_of_well_formed_logs(a: list[Entry], b: list[Entry]) -> None:
    """The check a follower runs: `matches(i, t)` holds exactly where the logs agree."""
    log = RaftLog(a)
    for e in b:
        assert log.matches(e.index, e.term) is (e.index <= len(a) and a[e.index - 1].term == e.term)


# ---- majority arithmetic ---------------------------------------------------------------


def drain(core: RaftCore) -> None:
    while core.has_ready():
        core.advance(core.ready())


def candidate(n: int, entries: list[Entry] | None = None) -> RaftCore:
    ids = tuple(f"n{i}" for i in range(1, n + 1))
    cfg = CoreConfig("n1", ids, "s", election_ticks=(5, 5), pre_vote=False)
    core = RaftCore(cfg, random.Random(0), HardState(term=1), entries or [])
    for _ in range(5):
        core.tick()
    drain(core)
    return core


@given(st.integers(1, 9), st.data())
def test_a_candidate_wins_with_more_than_half_the_votes(n: int, data: st.DataObject) -> None:
    core = candidate(n)
    peers = [f"n{i}" for i in range(2, n + 1)]
    grants = data.draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
    for peer, grant in zip(peers, grants, strict=True):
        core.step(Message(MsgType.VOTE_RESP, peer, "n1", term=2, reject=not grant))
    votes = 1 + sum(grants)
    assert (core.role is Role.LEADER) is (2 * votes > n)
    if 2 * (n - votes) > n:
        assert core.role is Role.FOLLOWER  # a majority refused


@given(st.integers(1, 7), st.integers(0, 5), st.integers(0, 5), st.data())
def test_the_leader_commits_what_a_majority_holds_of_its_term(
    n: int, old: int, new: int, data: st.DataObject
) -> None:
    """§5.3 and §5.4.2: commit = the highest current-term index held by more than n/2."""
    core = candidate(n, [Entry(1, i, b"0") for i in range(1, old + 1)])
    for i in range(2, n + 1):
        core.step(Message(MsgType.VOTE_RESP, f"n{i}", "n1", term=2))
    assert core.role is Role.LEADER
    for _ in range(new):
        core.propose(b"1")
    drain(core)
    last = old + 1 + new
    assert core.log.last_index == last
    matches = data.draw(st.lists(st.integers(0, last), min_size=n - 1, max_size=n - 1))
    for i, match in enumerate(matches, start=2):
        core.step(Message(MsgType.APPEND_RESP, f"n{i}", "n1", term=2, index=match))
    held = [last, *matches]
    expected = max(
        (i for i in range(old + 1, last + 1) if 2 * sum(m >= i for m in held) > n), default=0
    )
    assert core.log.commit == expected
