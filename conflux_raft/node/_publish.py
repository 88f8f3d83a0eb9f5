"""StatusPublisher: a thread that writes a node's status to its Redis key about once a
second, with an expiry, so that `conflux status` sees the nodes that are alive."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..core import Entry, EntryKind, RaftLog
from ..transport import RedisTransport

__all__ = ["TAIL", "StatusPublisher", "committed_tail", "shown"]

log = logging.getLogger("conflux_raft")

EVERY = 1.0  # seconds between two publications
TTL = 5.0  # seconds a publication lives: a node gone for longer is not reported
TAIL = 20  # committed user entries published
_TAIL_SCAN = 200  # entries looked at, at most, to find them
_SHOWN_BYTES = 1024  # a larger entry is published as its size only


def committed_tail(raft_log: RaftLog, n: int = TAIL) -> list[Entry]:
    """The last `n` committed user entries `raft_log` holds (fewer after compaction),
    oldest first. Call it with the node's lock held."""
    out: list[Entry] = []
    stop = max(raft_log.offset, raft_log.commit - _TAIL_SCAN)
    for index in range(raft_log.commit, stop, -1):
        entry = raft_log.entry(index)
        if entry.kind is EntryKind.NORMAL:
            out.append(entry)
            if len(out) == n:
                break
    return out[::-1]


def shown(entry: Entry) -> list[Any]:
    """[index, term, data] for the status key; data is a string "<N bytes>" when large."""
    size = len(entry.data)
    data = f"<{size} bytes>" if size > _SHOWN_BYTES else orjson.loads(entry.data)
    return [entry.index, entry.term, data]


class StatusPublisher:
    """Publishes `report()` plus `published_at` (wall clock) every `every` seconds for
    `ttl` seconds. A failure (Redis down) costs the node nothing: the transport skips
    it. `close` stops the thread, which deletes the key as it ends."""

    def __init__(self, node_id: str, transport: RedisTransport,
                 report: Callable[[], dict[str, Any]], every: float = EVERY,
                 ttl: float = TTL) -> None:
        self._transport = transport
        self._report = report
        self._every = every
        self._ttl = ttl
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._run, name=f"conflux-status-{node_id}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float | None) -> None:
        """Stop publishing; wait up to `timeout` for the key to be deleted."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(1.0 if timeout is None else min(timeout, 1.0))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                payload = orjson.dumps({**self._report(), "published_at": time.time()})
            except Exception:  # a bug: say it once, keep the node running
                if not self._warned:
                    log.exception("status of %s not published", self._transport.node_id)
                self._warned = True
            else:
                self._transport.publish(payload, self._ttl)
            self._stop.wait(self._every)
        self._transport.publish(None, self._ttl)  # a clean close: gone at once
