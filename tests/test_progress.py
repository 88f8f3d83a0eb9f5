"""Progress (the leader's view of a follower), its inflight window, and the quorum
arithmetic, each on its own."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflux_raft.core import Inflights, MajorityConfig, Progress, ProgressState, VoteResult


def replicating(match: int) -> Progress:
    pr = Progress(match + 1, max_inflight=3, max_inflight_bytes=100)
    pr.maybe_update(match)
    pr.become_replicate()
    return pr


def test_a_probe_sends_one_append_then_waits() -> None:
    pr = Progress(5, 64, 1 << 20)
    assert pr.state is ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(9, 10)
    assert pr.is_paused() and pr.next == 5  # a probe does not move next
    pr.heartbeat(9)
    assert pr.is_paused()  # a heartbeat alone does not resend to a follower that is gone
    pr.responded()
    assert not pr.is_paused()  # an answer (to an append or a heartbeat) lets it try again


def test_an_ack_moves_match_and_next_and_frees_the_window() -> None:
    pr = replicating(4)
    pr.sent_entries(6, 10)
    pr.sent_entries(8, 10)
    assert (pr.next, len(pr.inflights)) == (9, 2)
    assert pr.maybe_update(6) and (pr.match, pr.next, len(pr.inflights)) == (6, 9, 1)
    assert not pr.maybe_update(5)  # old news
    assert pr.maybe_update(8) and len(pr.inflights) == 0


def test_the_window_is_bounded_in_count_and_in_bytes() -> None:
    pr = replicating(0)
    for i in (1, 2, 3):
        assert not pr.is_paused()
        pr.sent_entries(i, 1)
    assert pr.is_paused()  # three appends in flight
    pr.maybe_update(3)
    pr.sent_entries(4, 100)
    assert pr.is_paused()  # one append, but 100 bytes
    inflights = Inflights(10, 50)
    inflights.add(1, 30)
    inflights.add(2, 30)
    assert inflights.full()
    inflights.free_le(1)
    assert not inflights.full() and len(inflights) == 1


def test_a_stalled_pipeline_probes_again_at_the_next_heartbeat() -> None:
    pr = replicating(3)
    pr.sent_entries(7, 10)
    pr.heartbeat(7)  # the first heartbeat notes match
    assert pr.state is ProgressState.REPLICATE
    pr.heartbeat(7)  # no progress for a whole heartbeat: the appends count as lost
    assert pr.state is ProgressState.PROBE and pr.next == 4 and len(pr.inflights) == 0


def test_a_refusal_probes_back_and_a_stale_one_is_ignored() -> None:
    pr = replicating(5)
    pr.sent_entries(10, 10)
    assert not pr.maybe_decr_to(4, 4, 5)  # below match: stale
    assert pr.maybe_decr_to(8, 6, 7)
    assert pr.state is ProgressState.PROBE and pr.next == 7
    assert not pr.maybe_decr_to(9, 6, 7)  # a probe only hears the answer to its own append


def test_a_follower_that_lost_acknowledged_entries_is_probed_from_its_hint() -> None:
    pr = replicating(5)
    assert pr.maybe_decr_to(5, 2, 3)  # it refuses at its match, hinting 2: amnesia
    assert pr.state is ProgressState.PROBE and pr.next == 3 and pr.match == 5


def test_the_snapshot_state_pauses_appends() -> None:
    pr = replicating(2)
    pr.state = ProgressState.SNAPSHOT
    assert pr.is_paused()


@pytest.mark.parametrize(("voters", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_a_quorum_is_more_than_half(voters: int, quorum: int) -> None:
    assert MajorityConfig([f"n{i}" for i in range(voters)]).quorum == quorum


def test_votes_are_won_lost_or_pending() -> None:
    c = MajorityConfig(["a", "b", "c"])
    assert c.vote_result({"a": True}) is VoteResult.PENDING
    assert c.vote_result({"a": True, "b": True}) is VoteResult.WON
    assert c.vote_result({"a": True, "b": False, "c": False}) is VoteResult.LOST
    assert c.vote_result({"a": True, "x": True, "y": True}) is VoteResult.PENDING  # strangers
    assert c.is_active({"a", "c"}) and not c.is_active({"a", "x"})


@given(st.lists(st.integers(0, 100), min_size=1, max_size=7))
def test_the_committed_index_is_held_by_a_quorum(matches: list[int]) -> None:
    ids = [f"n{i}" for i in range(len(matches))]
    c = MajorityConfig(ids)
    n = c.committed_index(dict(zip(ids, matches, strict=True)))
    assert sum(m >= n for m in matches) >= c.quorum
    assert sum(m >= n + 1 for m in matches) < c.quorum  # and it is the highest such
