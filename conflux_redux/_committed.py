"""The apply side: the committed state, kept in the inner pydux store.

The node's apply thread calls `apply` once per committed action, in log order; it is
dispatched into the inner store under the store lock, then the listeners run (outside
the lock). A reducer that raises leaves the state as it was, on every node; the error
is kept for the future that waits on that index. `snapshot` and `restore` are the node's
snapshot functions: the state and the index it includes, as orjson; restoring makes a
new inner store from that state.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("conflux_redux")

MAX_KEPT_ERRORS = 10_000  # reducer errors remembered for the futures that wait on them

Listener = Callable[[], Any]

_reducing = threading.local()  # set while this thread runs the reducer


def reducing() -> bool:
    """Whether this thread is inside a Conflux store's reducer."""
    return getattr(_reducing, "active", False)


def reduce_with(reduce: Callable[[Any], Any], arg: Any) -> Any:
    """`reduce(arg)`, marked as reducing on this thread."""
    outer = reducing()
    _reducing.active = True
    try:
        return reduce(arg)
    finally:
        _reducing.active = outer


class CommittedState:
    """The inner store, the index applied to it, reducer errors and listeners."""

    def __init__(self, node_id: str, make_inner: Callable[[Any], Any],
                 initial_state: Any = None) -> None:
        self._id = node_id
        self._make_inner = make_inner  # state -> a pydux store starting from it
        self._dispatch: Callable[[Any], Any]
        self._get_state: Callable[[], Any]
        self._use(make_inner(initial_state))
        self._lock = threading.RLock()  # the store lock
        self._applied = 0  # index of the last entry dispatched into the inner store
        self._errors: OrderedDict[int, BaseException] = OrderedDict()
        self._listeners: tuple[tuple[object, Listener], ...] = ()
        self._sub_lock = threading.Lock()

    def _use(self, inner: Any) -> None:
        self._dispatch, self._get_state = inner["dispatch"], inner["get_state"]

    def get_state(self) -> Any:
        with self._lock:
            return self._get_state()

    def snapshot(self) -> bytes:
        """The node's snapshot function: the committed state and its index, as orjson."""
        with self._lock:
            return orjson.dumps({"index": self._applied, "state": self._get_state()})

    def restore(self, data: bytes) -> None:
        """The node's restore function: start over from a snapshot's state."""
        snap = orjson.loads(data)
        with self._lock:
            self._use(self._make_inner(snap["state"]))
            self._applied = snap["index"]
            self._errors.clear()
        self._notify()

    def state_and_index(self) -> tuple[Any, int]:
        """The committed state and the index it includes, read together."""
        with self._lock:
            return self._get_state(), self._applied

    def apply(self, data: Any, index: int) -> None:
        """The node's `committed` callback, on its apply thread."""
        with self._lock:
            try:
                reduce_with(self._dispatch, data)
                failed: Exception | None = None
            except Exception as exc:
                failed = exc
                self._errors[index] = exc
                while len(self._errors) > MAX_KEPT_ERRORS:
                    self._errors.popitem(last=False)
            self._applied = index
        if failed is not None:
            log.error(
                "%s: the reducer raised on the action at index %d (%r); the state is "
                "unchanged on every node", self._id, index, data, exc_info=failed)
            return
        self._notify()

    def _notify(self) -> None:
        for _, listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("%s: a listener raised", self._id)

    def take_error(self, index: int) -> BaseException | None:
        """The reducer's error on the action at `index`, if it raised (once)."""
        if not self._errors:  # the usual case; errors are kept before futures resolve
            return None
        with self._lock:
            return self._errors.pop(index, None)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        if not callable(listener):
            raise TypeError("Expected listener to be a function.")
        token = object()
        with self._sub_lock:
            self._listeners = (*self._listeners, (token, listener))

        def unsubscribe() -> None:
            with self._sub_lock:
                self._listeners = tuple(p for p in self._listeners if p[0] is not token)

        return unsubscribe
