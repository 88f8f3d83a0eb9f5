"""What the driver needs from a store of term, vote, commit and log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .._errors import EntryUnavailable
from ..core import Entry, HardState, Snapshot


class Storage(Protocol):
    """Hard state and log, written by the driver and read back (etcd's Storage).

    Implementations: `MemoryStorage`, `FileStorage`. The read methods raise
    `EntryUnavailable` for an index the store does not hold.
    """

    def load(self) -> tuple[HardState, list[Entry]]:
        """The state saved so far (empty on first start)."""
        ...

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably record `hard_state` (if given) and `entries`, which replace the stored
        log from `entries[0].index` on (between `first_index()` and `last_index() + 1`).
        Returns only once both are durable."""
        ...

    def load_voters(self) -> tuple[str, ...] | None:
        """The voter set saved by `save_voters`, or None if none was."""
        ...

    def save_voters(self, voters: Sequence[str]) -> None:
        """Durably record the voter set (found by discovery, or given as members);
        returns only once it is durable. A membership change will replace it."""
        ...

    def snapshot(self) -> Snapshot | None:
        """The last snapshot saved, or None."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Durably record `snapshot`, replacing the one before; one no newer than the
        saved one is ignored (a node's own snapshot, saved from its apply thread, may lose
        the race to one received from the leader). If the stored log does
        not hold the snapshot's last entry (index and term), none of it follows the
        snapshot: it is emptied, and the next entry saved is `snapshot.index + 1`. If it
        does, the entries stay (`compact` drops them later). `load` returns only the
        entries after the snapshot."""
        ...

    def compact(self, index: int) -> None:
        """Drop the stored entries up to `index` (a saved snapshot holds them), so that
        `first_index()` becomes `index + 1` (at most `last_index() + 1`); an index before
        `first_index()` changes nothing. Dropped entries are not reported again, after a
        restart either; the space they took may be given back later (whole files)."""
        ...

    def first_index(self) -> int:
        """The index of the first entry held: 1 until the log is compacted, and
        `snapshot.index + 1` once a snapshot emptied it."""
        ...

    def last_index(self) -> int:
        """The index of the last entry held (first_index() - 1 when none is)."""
        ...

    def term(self, index: int) -> int:
        """The term of entry `index` (0 for index 0)."""
        ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries `lo` .. `hi - 1`, all held."""
        ...

    def close(self) -> None:
        """Release files; later calls are not allowed."""
        ...


def check_range(lo: int, hi: int, first: int, last: int) -> None:
    """Raise EntryUnavailable unless first <= lo <= hi <= last + 1."""
    if not first <= lo <= hi <= last + 1:
        raise EntryUnavailable(f"entries {lo}..{hi - 1} asked for; the storage holds "
                               f"{first}..{last}")
