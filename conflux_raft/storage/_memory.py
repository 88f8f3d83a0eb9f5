"""A store that keeps everything in memory: fast, and lost with the process."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from ..core import Entry, HardState, Snapshot
from ._protocol import check_range


class MemoryStorage:
    """Keeps hard state and log in memory."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._entries: list[Entry] = []
        self._first = 1  # the index of _entries[0]
        self._voters: tuple[str, ...] | None = None
        self._snapshot: Snapshot | None = None
        self._mutex = threading.Lock()  # save_snapshot may come from another thread

    def load(self) -> tuple[HardState, list[Entry]]:
        after = self._snapshot.index if self._snapshot is not None else 0
        return self.hard_state, self._entries[max(after + 1 - self._first, 0) :]

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if entries:
            with self._mutex:
                first, last = entries[0].index, self._first + len(self._entries) - 1
                if not self._first <= first <= last + 1:
                    raise ValueError(f"entries from {first} saved; the storage holds "
                                     f"{self._first}..{last} (a save may overwrite held "
                                     "entries or append after the last, nothing else)")
                del self._entries[first - self._first :]
                self._entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def load_voters(self) -> tuple[str, ...] | None:
        return self._voters

    def save_voters(self, voters: Sequence[str]) -> None:
        self._voters = tuple(voters)

    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._mutex:
            if snapshot.index <= (self._snapshot.index if self._snapshot else 0):
                return  # a newer one is saved
            self._snapshot = snapshot
            i = snapshot.index - self._first
            if not (0 <= i < len(self._entries) and self._entries[i].term == snapshot.term):
                self._entries, self._first = [], snapshot.index + 1  # nothing follows it

    def compact(self, index: int) -> None:
        """Drop the entries up to `index` (a saved snapshot holds them)."""
        with self._mutex:
            cut = min(max(index + 1 - self._first, 0), len(self._entries))
            del self._entries[:cut]
            self._first += cut

    def first_index(self) -> int:
        return self._first

    def last_index(self) -> int:
        return self._first + len(self._entries) - 1

    def term(self, index: int) -> int:
        if index == 0:
            return 0
        return self.entries(index, index + 1)[0].term

    def entries(self, lo: int, hi: int) -> list[Entry]:
        check_range(lo, hi, self._first, self.last_index())
        return self._entries[lo - self._first : hi - self._first]

    def close(self) -> None:
        pass
