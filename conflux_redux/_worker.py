"""One small background thread per store: it settles `perform` futures (so that users'
callbacks never run on the node's loop thread) and fires their deadlines."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

__all__ = ["Worker"]

log = logging.getLogger("conflux_redux")


class Worker:
    """Runs queued calls in order, and timed calls at their deadline, on one thread that
    starts on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cv = threading.Condition()
        self._tasks: deque[Callable[[], object]] = deque()
        self._timers: list[tuple[float, int, Callable[[], object]]] = []
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call(self, fn: Callable[[], object]) -> None:
        with self._cv:
            if self._closed:
                return
            self._tasks.append(fn)
            self._ensure_thread()
            self._cv.notify()

    def at(self, deadline: float, fn: Callable[[], object]) -> None:
        with self._cv:
            if self._closed:
                return
            heapq.heappush(self._timers, (deadline, next(self._ids), fn))
            self._ensure_thread()
            self._cv.notify()

    def close(self) -> None:
        """Stop after the calls already queued; timers that have not fired are dropped."""
        with self._cv:
            self._closed = True
            self._timers.clear()
            self._cv.notify()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cv:
                while True:
                    now = time.monotonic()
                    due = bool(self._timers) and self._timers[0][0] <= now
                    if self._tasks or due:
                        break
                    if self._closed:
                        return
                    wait = self._timers[0][0] - now if self._timers else None
                    self._cv.wait(wait)
                batch = list(self._tasks)
                self._tasks.clear()
                while self._timers and self._timers[0][0] <= now:
                    batch.append(heapq.heappop(self._timers)[2])
            for fn in batch:
                try:
                    fn()
                except Exception:
                    log.exception("%s: a callback raised", self._name)
