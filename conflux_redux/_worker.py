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
from concurrent.futures import Future
from typing import Any

__all__ = ["Worker"]

log = logging.getLogger("conflux_redux")

_MIN_TIMERS = 1024  # timers kept before the settled ones are swept out


class Worker:
    """Runs queued calls in order, and timed calls at their deadline, on one thread that
    starts on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cv = threading.Condition()
        self._tasks: deque[Callable[[], object]] = deque()
        self._timers: list[tuple[float, int, Callable[[], object], Future[Any]]] = []
        self._limit = _MIN_TIMERS
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

    def at(self, deadline: float, fn: Callable[[], object], future: Future[Any]) -> None:
        """Call `fn` at `deadline`, unless `future` is done by then (the timer is then
        forgotten: settled timers are swept out, so the table stays small)."""
        with self._cv:
            if self._closed:
                return
            heapq.heappush(self._timers, (deadline, next(self._ids), fn, future))
            if len(self._timers) > self._limit:
                self._timers = [t for t in self._timers if not t[3].done()]
                heapq.heapify(self._timers)
                self._limit = max(_MIN_TIMERS, 2 * len(self._timers))
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
                    _, _, fn, future = heapq.heappop(self._timers)
                    if not future.done():
                        batch.append(fn)
            for fn in batch:
                try:
                    fn()
                except Exception:
                    log.exception("%s: a callback raised", self._name)
