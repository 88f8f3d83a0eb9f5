"""A store that keeps everything in memory: fast, and lost with the process."""

from __future__ import annotations

from collections.abc import Sequence

from ..core import Entry, HardState, Snapshot
from ._protocol import check_range


class MemoryStorage:
    """Keeps hard state and log in memory."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._entries: list[Entry] = []
        self._voters: tuple[str, ...] | None = None
        self._snapshot: Snapshot | None = None

    def load(self) -> tuple[HardState, list[Entry]]:
        return self.hard_state, list(self._entries)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if entries:
            del self._entries[entries[0].index - 1 :]
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
        self._snapshot = snapshot

    def first_index(self) -> int:
        return 1

    def last_index(self) -> int:
        return len(self._entries)

    def term(self, index: int) -> int:
        if index == 0:
            return 0
        return self.entries(index, index + 1)[0].term

    def entries(self, lo: int, hi: int) -> list[Entry]:
        check_range(lo, hi, 1, len(self._entries))
        return self._entries[lo - 1 : hi - 1]

    def close(self) -> None:
        pass
