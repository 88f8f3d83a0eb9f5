"""The apply thread: it runs users' callbacks in log order and settles the futures that
wait for an entry to be applied, so that a slow callback never delays heartbeats. It
restores the application from snapshots, and takes them: the application's state is
captured here, between two entries, never on the loop thread."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from .._errors import ConfigError, ProposalTimeout
from ..core import Entry, EntryKind, RaftLog
from ._commands import Appended, Committed, LeaderChanged, Restored, Work, settle

log = logging.getLogger("conflux_raft")

EVENTS = ("committed", "leader_elected", "appended", "restored")
ENTRY: Any = object()  # wait_applied's default value: the LogEntry applied


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

    def __init__(self, node_id: str, restore: Callable[[bytes], Any] | None = None,
                 snapshot: Callable[[], bytes] | None = None, snapshot_every: int = 0,
                 take: Callable[[int, bytes], None] | None = None) -> None:
        self._id = node_id
        self._restore = restore
        self._snapshot = snapshot  # the application's state as bytes, between two entries
        self._every = snapshot_every
        self._take = take  # hands a snapshot's index and data to the node
        self.snapshot_index = 0  # of the last snapshot restored or taken
        self._lock = threading.Lock()
        self._handlers: dict[str, list[Callable[..., Any]]] = {e: [] for e in EVENTS}
        self._queue: queue.SimpleQueue[Work | None] = queue.SimpleQueue()
        # index -> (the term it must have, or None for any; future; value to settle with)
        self._waiters: dict[int, list[tuple[int | None, Future[Any], Any]]] = {}
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

    def wait_applied(self, index: int, term: int | None, future: Future[Any],
                     log: RaftLog, value: Any = ENTRY) -> None:
        """Settle `future` with `value` (by default the LogEntry) once entry `index` is
        applied here, with `term` unless that is None; with ProposalTimeout if an entry
        of another term took that index. Called by the loop thread."""
        with self._lock:
            if index > self.applied:
                self._waiters.setdefault(index, []).append((term, future, value))
                return
        if index <= log.offset and term is not None:  # applied, then compacted away
            settle(future, exc=ProposalTimeout(
                f"entry {index} was applied here and compacted before the answer came: "
                f"whether it is the one of term {term} cannot be shown; it may have"))
            return
        entry = log.entry(index) if log.offset < index <= log.last_index else None
        _settle_applied(index, term, future, value, entry)

    def reject_all(self, exc: BaseException) -> None:
        """Fail every waiting future (close)."""
        with self._lock:
            waiting, self._waiters = self._waiters, {}
        for waiters in waiting.values():
            for _, f, _ in waiters:
                settle(f, exc=exc)

    def run(self) -> None:
        """The thread's body. It raises (and the node stops) when what comes next could
        only be applied on a state that is not the cluster's: a snapshot not restored."""
        while True:
            work = self._queue.get()
            if work is None:
                return
            self._apply(work)

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
        elif isinstance(work, Restored):
            self._apply_snapshot(work)
        else:
            self._apply_committed(work)
            self._maybe_snapshot()

    def _apply_snapshot(self, work: Restored) -> None:
        snap = work.snapshot
        if self._restore is None:
            raise ConfigError(f"{self._id} received a snapshot up to {snap.index} but has no "
                              "restore function (give every node snapshot and restore)")
        try:
            self._restore(snap.data)
        except Exception as exc:
            raise RuntimeError(f"{self._id}: restore() raised on the snapshot up to "
                               f"{snap.index}; entries after it cannot be applied") from exc
        with self._lock:
            self.applied = self.snapshot_index = snap.index
            covered = [i for i in self._waiters if i <= snap.index]
            waiting = [w for i in covered for w in self._waiters.pop(i)]
        for term, f, value in waiting:  # their entries are inside the snapshot
            if term is None and value is not ENTRY:
                settle(f, value)
            else:
                settle(f, exc=ProposalTimeout(
                    f"entry of term {term} came inside a snapshot up to {snap.index}: it "
                    "may have committed, but cannot be shown here"))
        self._emit("restored", snap.index)
        for fut in work.done:
            settle(fut, snap.index)

    def _maybe_snapshot(self) -> None:
        if (self._snapshot is None or self._take is None
                or self.applied - self.snapshot_index < self._every):
            return
        index = self.applied
        try:
            data = self._snapshot()
            if not isinstance(data, bytes):
                raise TypeError(f"snapshot() returned {type(data).__name__}, not bytes")
            self._take(index, data)
        except Exception:
            log.exception("%s: taking a snapshot at %d failed; the log is kept", self._id,
                          index)
        self.snapshot_index = index  # tried: the next try comes snapshot_every later

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
            for term, f, value in waiters:
                _settle_applied(e.index, term, f, value, e)
        for e, fut in work.done:
            settle(fut, e.index)


def _settle_applied(index: int, term: int | None, future: Future[Any], value: Any,
                    entry: Entry | None) -> None:
    if term is not None and (entry is None or entry.term != term):
        settle(future, exc=ProposalTimeout(
            f"entry {index} of term {term} was replaced: it was not applied"))
    elif value is ENTRY:
        assert entry is not None
        settle(future, LogEntry.of(entry))
    else:
        settle(future, value)
