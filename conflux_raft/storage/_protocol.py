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
        log from `entries[0].index` on. Returns only once both are durable."""
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
        """Durably record `snapshot` (replacing the one before). If the stored log does
        not hold the snapshot's last entry, none of it follows the snapshot: it is
        emptied. `load` returns only the entries after the snapshot."""
        ...

    def first_index(self) -> int:
        """The index of the first entry held (1 until the log is compacted)."""
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
