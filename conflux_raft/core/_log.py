"""The in-memory Raft log: entries after a snapshot point, with commit and applied marks."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from itertools import accumulate

from ._types import Entry

ENTRY_OVERHEAD = 32  # bytes counted per entry besides its data, for message size bounds


class RaftLog:
    """Entries ``offset+1 .. last_index``; index `offset` (term `offset_term`) is compacted."""

    __slots__ = ("_ends", "_entries", "applied", "commit", "offset", "offset_term")

    def __init__(self, entries: Iterable[Entry] = (), offset: int = 0, offset_term: int = 0):
        self.offset = offset
        self.offset_term = offset_term
        self._entries: list[Entry] = []
        self._ends: list[int] = []  # bytes of the entries up to each one, for slice()
        self.append(entries)
        self.commit = offset
        self.applied = offset
        for i, e in enumerate(self._entries):
            if e.index != offset + 1 + i:
                raise ValueError(f"log is not contiguous at index {e.index}")

    @property
    def last_index(self) -> int:
        return self.offset + len(self._entries)

    @property
    def last_term(self) -> int:
        return self._entries[-1].term if self._entries else self.offset_term

    def term_at(self, index: int) -> int | None:
        """The term of entry `index`, or None when it is compacted or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if self.offset < index <= self.last_index:
            return self._entries[index - self.offset - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        return self._entries[index - self.offset - 1]

    def slice(self, lo: int, hi: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries lo..hi-1, at most `max_count`, and within `max_bytes` (but at least one)."""
        hi = min(hi, lo + max_count, self.last_index + 1)
        a, b = lo - self.offset - 1, hi - self.offset - 1
        if b <= a:
            return []
        limit = (self._ends[a - 1] if a else 0) + max_bytes
        return self._entries[a : max(bisect_right(self._ends, limit, a, b), a + 1)]

    def size(self, lo: int, hi: int) -> int:
        """The bytes that entries lo..hi-1 count for (their data, and an overhead each)."""
        a, b = lo - self.offset - 1, hi - self.offset - 1
        return self._ends[b - 1] - (self._ends[a - 1] if a else 0) if b > a else 0

    def entries_from(self, lo: int) -> list[Entry]:
        return self._entries[max(lo - self.offset - 1, 0) :]

    def append(self, entries: Iterable[Entry]) -> None:
        new = list(entries)
        self._entries.extend(new)
        ends = accumulate((len(e.data) + ENTRY_OVERHEAD for e in new),
                          initial=self._ends[-1] if self._ends else 0)
        next(ends)  # the initial value
        self._ends.extend(ends)

    def compact_to(self, index: int) -> None:
        """Drop the entries up to `index` (applied ones only): a snapshot holds them."""
        if not self.offset <= index <= self.applied:
            raise AssertionError(f"compacting to {index}: offset {self.offset}, applied "
                                 f"{self.applied}")
        cut = index - self.offset
        if cut == 0:
            return
        self.offset_term = self._entries[cut - 1].term
        self.offset = index
        base = self._ends[cut - 1]
        del self._entries[:cut]
        self._ends = [end - base for end in self._ends[cut:]]

    def restore(self, index: int, term: int) -> None:
        """Start over after a snapshot of entries up to `index` (of `term`): no entry is
        left, and everything up to `index` counts as committed and applied."""
        self._entries, self._ends = [], []
        self.offset, self.offset_term = index, term
        self.commit = self.applied = index

    def truncate_after(self, index: int) -> None:
        """Drop every entry after `index` (never a committed one)."""
        if index < self.commit:
            raise AssertionError(f"truncating committed entry {index + 1} (commit {self.commit})")
        del self._entries[index - self.offset :]
        del self._ends[index - self.offset :]

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a log ending at (last_index, last_term) at least as current as ours?"""
        return last_term > self.last_term or (
            last_term == self.last_term and last_index >= self.last_index
        )

    def conflict_hint(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (etcd's findConflictByTerm)."""
        index = min(index, self.last_index)
        while index > self.offset:
            t = self.term_at(index)
            if t is not None and t <= term:
                break
            index -= 1
        return index
