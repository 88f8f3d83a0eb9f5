"""Where a node keeps its hard state and log: in memory, or durably on local disk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ._types import Entry, HardState


class Storage(Protocol):
    """What the driver needs from a store of term, vote, commit and log."""

    def load(self) -> tuple[HardState, list[Entry]]:
        """The state saved so far (empty on first start)."""
        ...

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        """Durably record `hard_state` (if given) and `entries`, which replace the stored
        log from `entries[0].index` on. Returns only once both are durable."""
        ...

    def close(self) -> None:
        """Release files; later calls are not allowed."""
        ...


class MemoryStorage:
    """Keeps everything in memory: fast, and lost with the process."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.entries: list[Entry] = []

    def load(self) -> tuple[HardState, list[Entry]]:
        return self.hard_state, list(self.entries)

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if entries:
            del self.entries[entries[0].index - 1 :]
            self.entries.extend(entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def close(self) -> None:
        pass
