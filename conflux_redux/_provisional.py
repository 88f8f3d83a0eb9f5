"""The provisional view: the committed state with this node's uncommitted entries reduced
on top (as in the seed), kept incrementally."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson

from conflux_raft import EntryKind, RaftNode

from ._committed import CommittedState, reduce_with

Reducer = Callable[[Any, Any], Any]


class ProvisionalView:
    """States after each uncommitted entry are cached by (index, term): by Log Matching
    an entry with the same index and term has the same log before it, so the highest
    cached entry still in the log can be reused and only what follows is reduced."""

    def __init__(self, reducer: Reducer, committed: CommittedState) -> None:
        self._reducer = reducer
        self._committed = committed
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[int, Any]] = {}  # index -> (term, state after it)

    def get(self, node: RaftNode) -> Any:
        state, applied = self._committed.state_and_index()
        entries = [e for e in node.entries_after(applied) if e.kind is EntryKind.NORMAL]
        with self._lock:
            cache = self._cache
            for index in [i for i in cache if i <= applied]:
                del cache[index]
            start = 0
            for pos in range(len(entries) - 1, -1, -1):
                e = entries[pos]
                hit = cache.get(e.index)
                if hit is not None and hit[0] == e.term:
                    state, start = hit[1], pos + 1
                    break
            for e in entries[start:]:
                state = self._reduce_one(state, e.data)
                cache[e.index] = (e.term, state)
            return state

    def _reduce_one(self, state: Any, raw: bytes) -> Any:
        try:
            action = orjson.loads(raw)
            if not isinstance(action, dict) or action.get("type") is None:
                return state  # the inner store refuses it too: the state stays
            return reduce_with(lambda a: self._reducer(state, a), action)
        except Exception:
            return state  # as when it commits: a reducer error leaves the state unchanged
