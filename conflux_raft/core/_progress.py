"""The leader's view of one follower: a small state machine (etcd's tracker.Progress).

PROBE: one append at a time, until the follower answers; REPLICATE: appends pipelined
within an inflight window bounded in count and bytes; SNAPSHOT: the entries the
follower needs are compacted, so the snapshot goes one chunk per answer, and appends
wait until the follower holds it.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    """How the leader sends to a follower."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each append in flight to one follower, oldest first, with the
    bytes it carried; full at `max_count` appends or `max_bytes` bytes."""

    __slots__ = ("_bytes", "_items", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, index: int, size: int) -> None:
        self._items.append((index, size))
        self._bytes += size

    def free_le(self, index: int) -> None:
        """Forget the appends up to `index`: the follower holds them."""
        items = self._items
        while items and items[0][0] <= index:
            self._bytes -= items.popleft()[1]

    def full(self) -> bool:
        return len(self._items) >= self.max_count or self._bytes >= self.max_bytes

    def reset(self) -> None:
        self._items.clear()
        self._bytes = 0


class Progress:
    """What the leader knows of one follower: `match` (the highest index it is known to
    hold) and `next` (the next index to send), and how to send."""

    __slots__ = ("_heartbeat_match", "chunk_answered", "chunk_waited", "commit_sent",
                 "inflights", "match", "next", "pending_snapshot", "probe_sent",
                 "recent_active", "snapshot_offset", "state")

    def __init__(self, next_index: int, max_inflight: int, max_inflight_bytes: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: an append is out (SNAPSHOT: a chunk); wait for it
        self.inflights = Inflights(max_inflight, max_inflight_bytes)
        self.recent_active = False  # heard from since the last check-quorum
        self.commit_sent = 0  # the highest commit index an append let the follower reach
        self._heartbeat_match = -1  # match at the previous heartbeat
        self.pending_snapshot = 0  # SNAPSHOT: the index of the snapshot being sent
        self.snapshot_offset = 0  # SNAPSHOT: where the chunk last sent starts
        self.chunk_waited = 0  # SNAPSHOT: heartbeats since the chunk out was sent
        self.chunk_answered = False  # SNAPSHOT: the follower answered something since

    def __repr__(self) -> str:
        return (f"Progress({self.state.value}, match={self.match}, next={self.next}, "
                f"inflight={len(self.inflights)})")

    # ---- transitions -------------------------------------------------------------------

    def become_probe(self, next_index: int) -> None:
        self.state, self.probe_sent, self.next = ProgressState.PROBE, False, next_index
        self.inflights.reset()

    def become_snapshot(self, index: int) -> None:
        """The entries the follower needs are compacted: send the snapshot at `index`, one
        chunk at a time, from its first byte."""
        self.state, self.probe_sent = ProgressState.SNAPSHOT, False
        self.pending_snapshot, self.snapshot_offset = index, 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state, self.probe_sent, self.next = ProgressState.REPLICATE, False, self.match + 1
        self.inflights.reset()

    # ---- events ------------------------------------------------------------------------

    def is_paused(self) -> bool:
        """Whether the leader must hold back further appends for now."""
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        return self.state is ProgressState.SNAPSHOT or self.inflights.full()

    def sent_entries(self, last_index: int, size: int) -> None:
        """An append carrying entries up to `last_index` (`size` bytes) was sent."""
        if self.state is ProgressState.PROBE:
            self.probe_sent = True
        else:
            self.next = last_index + 1
            self.inflights.add(last_index, size)

    def sent_commit(self, commit: int, last_index: int) -> None:
        """An append ending at `last_index` carried `commit`: the follower may commit up
        to the lower of the two."""
        self.commit_sent = max(self.commit_sent, min(commit, last_index))

    def needs_commit(self, commit: int) -> bool:
        """Whether the follower holds entries up to a commit index it was not told."""
        return min(commit, self.match) > self.commit_sent

    def maybe_update(self, index: int) -> bool:
        """The follower acknowledged holding up to `index`; False if that is old news."""
        if index <= self.match:
            return False
        self.match = index
        self.next = max(self.next, index + 1)
        self.inflights.free_le(index)
        return True

    def maybe_decr_to(self, rejected: int, hint: int, hint_next: int) -> bool:
        """The follower refused the append after `rejected`, hinting at `hint`, from which
        the leader's log suggests resending at `hint_next`. False for a stale refusal."""
        replicate = self.state is ProgressState.REPLICATE
        if rejected == self.match and hint < self.match and (replicate
                                                             or rejected == self.next - 1):
            # The follower lacks entries it acknowledged: it restarted without durable
            # storage, or this refusal is stale (sent before its ack, delivered after).
            # Probe from the hint but keep match: lowering match on stale refusals stalls
            # replication for good when the network reorders.
            self.become_probe(hint_next)
            return True
        if rejected <= self.match or (not replicate and rejected != self.next - 1):
            return False
        self.become_probe(max(self.match + 1, min(hint_next, rejected)))
        return True

    def sent_chunk(self) -> None:
        """SNAPSHOT: a chunk was sent; wait for its answer."""
        self.probe_sent, self.chunk_waited, self.chunk_answered = True, 0, False

    def chunk_lost(self, wait: int) -> bool:
        """SNAPSHOT, on a heartbeat: whether the chunk out counts as lost and is sent
        again: unanswered for `wait` heartbeats by a follower that answers other messages.
        A follower that answers nothing is only sent heartbeats, never a chunk each time."""
        self.chunk_waited += 1
        return self.chunk_answered and self.chunk_waited >= wait

    def heartbeat(self, last_index: int) -> None:
        """A heartbeat is due: a pipeline that made no progress since the last one counts
        its appends as lost and probes again."""
        if (self.state is ProgressState.REPLICATE and self.match == self._heartbeat_match
                and self.match < last_index):
            self.become_probe(self.match + 1)
        self._heartbeat_match = self.match

    def responded(self) -> None:
        """The follower answered (an append or a heartbeat): a probe may send again. Only
        an answer does this, so a follower that is gone gets heartbeats, not a full
        append every heartbeat."""
        if self.state is ProgressState.PROBE:
            self.probe_sent = False
        elif self.state is ProgressState.SNAPSHOT:
            self.chunk_answered = True
