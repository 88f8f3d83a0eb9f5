"""Client sessions: the second protocol inside the core (Raft dissertation §6.3).

Each core numbers its own proposals (session, seq). `ProposalQueue` holds them until
they are seen committed and moves them to the leader one batch per round trip; the
leader's `SessionTable` appends seq n of a session only after n-1, and only once, so
forwarding, redirects and retries never duplicate or reorder a node's proposals.

A session named `<owner>.<incarnation>` (a decimal number that grows each time the owner
starts) supersedes the owner's older ones: the table keeps one session per owner and
refuses the proposals of a superseded one (its process is gone; what still arrives from
it is a delayed copy), so it stays as small as the set of nodes, however often they
restart. Sessions named otherwise are kept, each on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._types import Entry, EntryKind


class ProposalQueue:
    """This node's proposals, seq -> data, from `add` until `committed`, and where they go:
    `target` (the leader, or where a redirect points), what was `sent` to it and what it
    `acked` holding."""

    __slots__ = ("_pending", "_resend_elapsed", "acked", "next_seq", "sent", "session",
                 "target")

    def __init__(self, session: str) -> None:
        self.session = session
        self._pending: dict[int, bytes] = {}
        self.next_seq = 1
        self.sent = 0  # highest seq sent to the target
        self.acked = 0  # highest seq the target acknowledged holding
        self.target: str | None = None
        self._resend_elapsed = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, data: bytes) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self._pending[seq] = data
        return seq

    def committed(self, seq: int) -> None:
        self._pending.pop(seq, None)

    def committed_through(self, seq: int) -> None:
        """Every seq up to `seq` is committed (a snapshot holds them)."""
        for s in [s for s in self._pending if s <= seq]:
            del self._pending[s]

    def retarget(self, target: str | None) -> None:
        """Send to `target` from now on; what an earlier target acked may be lost."""
        self.target = target
        self.forget_acks()

    def forget_acks(self) -> None:
        self.sent = self.acked = 0

    def sendable(self) -> bool:
        """Unsent proposals, and no batch in flight (so reordering makes no gaps)."""
        return (
            bool(self._pending)
            and self.target is not None
            and self.sent <= self.acked
            and max(self.sent, self.acked) < self.next_seq - 1
        )

    def take(self, max_count: int) -> tuple[Entry, ...]:
        """The next batch for the target (at most `max_count`), marked as sent."""
        first = max(self.sent, self.acked, next(iter(self._pending)) - 1) + 1
        hi = min(first + max_count, self.next_seq)
        self.sent = hi - 1
        return tuple(Entry(0, 0, self._pending[s], EntryKind.NORMAL, self.session, s)
                     for s in range(first, hi))

    def on_ack(self, top: int, gap: int) -> None:
        """The target holds every seq up to `top`; if `gap`, it lacks seq `gap`."""
        self.acked = max(self.acked, top)
        self._resend_elapsed = 0
        if gap:
            self.sent = max(self.acked, min(self.sent, gap - 1))

    def ticks_until_resend(self, resend_ticks: int) -> int | None:
        """Ticks until `tick` resends the batch in flight (None: nothing is in flight)."""
        if self._pending and self.sent > self.acked:
            return resend_ticks - self._resend_elapsed
        return None

    def tick(self, resend_ticks: int) -> None:
        """A batch unanswered for `resend_ticks` counts as lost: send it again."""
        if self._pending and self.sent > self.acked:
            self._resend_elapsed += 1
            if self._resend_elapsed >= resend_ticks:
                self._resend_elapsed = 0
                self.sent = self.acked


def owner_of(session: str) -> tuple[str, int] | None:
    """`(owner, incarnation)` of a session named `<owner>.<incarnation>`, else None."""
    owner, dot, incarnation = session.rpartition(".")
    if dot and owner and incarnation.isdigit() and incarnation.isascii():
        return owner, int(incarnation)
    return None


class SessionTable:
    """Leader: the highest seq of each live session in its log (one per owner)."""

    __slots__ = ("_owners", "_top")

    def __init__(self) -> None:
        self._top: dict[str, int] = {}
        self._owners: dict[str, tuple[int, str]] = {}  # owner -> (incarnation, session)

    def __len__(self) -> int:
        return len(self._top)

    def items(self) -> list[tuple[str, int]]:
        """(session, highest seq) of each live session, sorted."""
        return sorted(self._top.items())

    def rebuild(self, base: Iterable[tuple[str, int]], entries: Iterable[Entry]) -> None:
        """Start over from a snapshot's sessions and the entries of the log (a new leader
        does this); the entries may overlap the snapshot."""
        self._top, self._owners = {}, {}
        for client, top in base:
            if self._live(client):
                self._top[client] = max(top, self._top.get(client, 0))
        for e in entries:
            if e.client and self._live(e.client) and e.seq > self._top.get(e.client, 0):
                self._top[e.client] = e.seq

    def _live(self, client: str) -> bool:
        """Whether `client` may propose: the newest session of its owner (which, if it is
        new, supersedes the owner's older session here)."""
        if self.superseding(client):
            return False
        o = owner_of(client)
        if o is not None:
            known = self._owners.get(o[0])
            if known is None or o[1] > known[0]:
                if known is not None:
                    self._top.pop(known[1], None)
                self._owners[o[0]] = (o[1], client)
        return True

    def superseding(self, client: str) -> int:
        """The incarnation of `client`'s owner that supersedes `client` here, else 0."""
        o = owner_of(client)
        known = self._owners.get(o[0]) if o is not None else None
        return known[0] if o is not None and known is not None and o[1] < known[0] else 0

    def accept(self, client: str, entries: Sequence[Entry], term: int,
               last_index: int) -> tuple[list[Entry], int, int]:
        """The entries of `client` that come next in its sequence, once each, as entries
        of `term` after `last_index`; with the highest seq now held and the seq wanted
        next if a gap was seen (else 0). A superseded session gets nothing appended."""
        if not self._live(client):
            return [], 0, 0
        top = self._top.get(client, 0)
        new: list[Entry] = []
        gap = 0
        for e in entries:
            if e.seq <= top:
                continue
            if e.seq != top + 1:
                gap = top + 1
                break
            top = e.seq
            new.append(Entry(term, last_index + len(new) + 1, e.data, EntryKind.NORMAL,
                             client, e.seq))
        self._top[client] = top
        return new, top, gap
