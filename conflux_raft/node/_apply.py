"""The apply thread: it runs users' callbacks in log order and settles the futures that
wait for an entry to be applied, so that a slow callback never delays heartbeats."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from .._errors import ProposalTimeout
from ..core import Entry, EntryKind, RaftLog
from ._commands import Appended, Committed, LeaderChanged, Work, settle

log = logging.getLogger("conflux_raft")

EVENTS = ("committed", "leader_elected", "appended")


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of `RaftNode.get_log()`; `data` is the decoded value (None for internal
    entries)."""

    index: int
    term: int
    data: Any
    internal: bool

    @classmethod
    def of(cls, e: Entry) -> LogEntry:
        internal = e.kind is not EntryKind.NORMAL
        return cls(e.index, e.term, None if internal else orjson.loads(e.data), internal)


class Applier:
    """Callbacks by event, the index applied so far, and futures waiting for an entry.

    A lock of its own guards `applied` and the waiters against the loop thread, which
    registers waiters; the apply thread never waits for the node's lock.
    """

    def __init__(self, node_id: str) -> None:
        self._id = node_id
        self._lock = threading.Lock()
        self._handlers: dict[str, list[Callable[..., Any]]] = {e: [] for e in EVENTS}
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        self._waiters: dict[int, list[tuple[int, Future[LogEntry]]]] = {}
        self.applied = 0

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; one of {EVENTS}")
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._handlers[event] = [*self._handlers[event], callback]

        def off() -> None:
            self._handlers[event] = [c for c in self._handlers[event] if c is not callback]

        return off

    def wants_appended(self) -> bool:
        return bool(self._handlers["appended"])

    def put(self, work: Work | None) -> None:
        """Queue work; None stops the thread once the work before it is done."""
        self._queue.put(work)

    def wait_applied(self, index: int, term: int, future: Future[LogEntry],
                     log: RaftLog) -> None:
        """Settle `future` with entry `index` once it is applied here with `term`, or with
        ProposalTimeout if another entry took that index. Called by the loop thread."""
        with self._lock:
            if index > self.applied:
                self._waiters.setdefault(index, []).append((term, future))
                return
        if log.term_at(index) == term:
            settle(future, LogEntry.of(log.entry(index)))
        else:
            settle(future, exc=_replaced(index, term))

    def reject_all(self, exc: BaseException) -> None:
        """Fail every waiting future (close)."""
        with self._lock:
            waiting, self._waiters = self._waiters, {}
        for waiters in waiting.values():
            for _, f in waiters:
                settle(f, exc=exc)

    def run(self) -> None:
        """The thread's body."""
        while True:
            work = self._queue.get()
            if work is None:
                return
            try:
                self._apply(work)
            except Exception:
                log.exception("%s: applying %s failed", self._id, type(work).__name__)

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self._handlers[event]:
            try:
                cb(*args)
            except Exception:
                log.exception("%s: a %s callback raised", self._id, event)

    def _apply(self, work: Work) -> None:
        if isinstance(work, LeaderChanged):
            self._emit("leader_elected", work.leader, work.term)
        elif isinstance(work, Appended):
            for e in work.entries:
                if e.kind is EntryKind.NORMAL:
                    self._emit("appended", orjson.loads(e.data), e.index)
        else:
            self._apply_committed(work)

    def _apply_committed(self, work: Committed) -> None:
        handlers = self._handlers["committed"]
        for e in work.entries:
            if e.kind is EntryKind.NORMAL and handlers:
                self._emit("committed", orjson.loads(e.data), e.index)
        # Then what waited on this batch: every callback up to its last index has run.
        with self._lock:
            self.applied = work.entries[-1].index
            waiting = self._waiters
            ready = [(e, waiting.pop(e.index)) for e in work.entries
                     if e.index in waiting] if waiting else []
        for e, waiters in ready:
            for term, f in waiters:
                if term == e.term:
                    settle(f, LogEntry.of(e))
                else:
                    settle(f, exc=_replaced(e.index, term))
        for e, fut in work.done:
            settle(fut, e.index)


def _replaced(index: int, term: int) -> ProposalTimeout:
    return ProposalTimeout(f"entry {index} of term {term} was replaced: it was not applied")
