"""One replica of a Conflux store: its RaftNode, the committed state, the provisional
view and the methods, wired together; `dispatch`, `perform` and `close` live here.

Locks, always taken in this order: the node's lock (held by its loop thread, where
methods run), then the store lock (the committed state), then the provisional cache
lock. Nothing waits for the node's lock while holding the store lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import orjson

from conflux_raft import (
    ClosedError,
    ConfluxRaftError,
    LogEntry,
    ProposalTimeout,
    RaftNode,
    settle,
    to_json,
)

from ._actions import PERFORM, check_shape, check_timeout, unencodable
from ._committed import CommittedState, reducing
from ._config import ConfluxConfig
from ._face import ConfluxStore
from ._methods import RPC_NAME, Methods, check_perform_args
from ._provisional import ProvisionalView
from ._worker import Worker

log = logging.getLogger("conflux_redux")

Reducer = Callable[[Any, Any], Any]


class Replica:
    """The state and threads behind one ConfluxStore."""

    def __init__(
        self,
        cfg: ConfluxConfig,
        create_store: Callable[..., Any],
        reducer: Reducer,
        initial_state: Any = None,
    ) -> None:
        if not callable(reducer):
            raise TypeError("Expected the reducer to be a function.")
        self.committed = CommittedState(cfg.id, lambda state: create_store(reducer, state),
                                        initial_state)
        self.provisional = ProvisionalView(reducer, self.committed)
        self.methods = Methods(cfg.methods, self.get_provisional_state)
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._closed = threading.Event()
        self._worker = Worker(f"conflux-redux-{cfg.id}")
        self.node = RaftNode(
            **cfg.node_options(), rpc={RPC_NAME: self.methods.serve}, autostart=False,
            snapshot=self.committed.snapshot if cfg.snapshot_every is not None else None,
            restore=self.committed.restore,
        )
        self.node.on("committed", self.committed.apply)
        try:
            self.node.start()
        except BaseException:
            self.node.close(0)
            raise
        self.store = ConfluxStore(
            dispatch=self.dispatch,
            subscribe=self.committed.subscribe,
            get_state=self.committed.get_state,
            replace_reducer=self.replace_reducer,
            get_provisional_state=self.get_provisional_state,
            perform=self.perform,
            read=self.read,
            close=self.close,
            node=self.node,
        )

    def get_provisional_state(self) -> Any:
        return self.provisional.get(self.node)

    def replace_reducer(self, next_reducer: Reducer) -> None:
        raise ConfluxRaftError(
            "replace_reducer is refused by a Conflux store: every replica must reduce the "
            "same log with the same reducer, and a function cannot travel through the log. "
            "Deploy the new reducer on every node with a fresh store (a new namespace).")

    # ---- futures --------------------------------------------------------------------

    def _closed_error(self) -> ClosedError:
        return ClosedError(f"the store of node {self.node.id} is closed")

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise self._closed_error()
        if reducing():  # pydux's rule: every replica's reducer would propose a copy
            raise ConfluxRaftError("Reducers may not dispatch actions.")

    def _new_future(self) -> Future[Any]:
        """A future that close() rejects if it is still pending."""
        fut: Future[Any] = Future()
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(self._untrack)
        if self._closed.is_set():  # close() may have run since the caller checked
            settle(fut, exc=self._closed_error())
        return fut

    def _untrack(self, fut: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(fut)

    # ---- dispatch -------------------------------------------------------------------

    def dispatch(self, action: Any, timeout: float | None = None) -> Future[Any]:
        if isinstance(action, dict) and action.get("type") == PERFORM:
            args = action.get("args", ())
            if not isinstance(args, (list, tuple)):
                raise TypeError(f'a {PERFORM} action\'s "args" must be a list')
            name: Any = action.get("name")  # checked by perform
            return self.perform(name, args, action.get("timeout", timeout))
        check_shape(action)
        self._check_open()
        try:
            raw = to_json(action)
        except TypeError as exc:
            raise unencodable(exc) from exc
        decoded = orjson.loads(raw)  # the action as every node reduces it
        appended = self.node.append(orjson.Fragment(raw), timeout)  # not encoded again
        # Not tracked for close(): closing the node fails `appended`, and so this one.
        result: Future[Any] = Future()

        def on_appended(f: Future[int]) -> None:
            exc = f.exception()
            if exc is not None:
                settle(result, exc=exc)
                return
            error = self.committed.take_error(f.result())
            if error is not None:
                settle(result, exc=error)
            else:
                settle(result, decoded)

        appended.add_done_callback(on_appended)
        return result

    # ---- read -----------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Future[Any]:
        """The committed state, linearizable: it holds every action committed before
        the call began (the node's `read`)."""
        check_timeout(timeout)
        self._check_open()
        result = self._new_future()
        index = self.node.read(timeout)

        def on_read(f: Future[int]) -> None:
            exc = f.exception()
            settle(result, exc=exc) if exc is not None else settle(
                result, self.committed.get_state())

        # Settled on the worker: callbacks on `result` never run on the node's threads.
        index.add_done_callback(lambda f: self._worker.call(lambda: on_read(f)))
        return result

    # ---- perform --------------------------------------------------------------------

    def perform(
        self, name: str, args: Iterable[Any] = (), timeout: float | None = None
    ) -> Future[Any]:
        arg_list = check_perform_args(name, args, timeout)
        self._check_open()
        result = self._new_future()
        if name not in self.methods:
            settle(result, exc=KeyError(f"no method named {name!r}"))
            return result
        if timeout is not None:
            self._worker.at(time.monotonic() + timeout, lambda: settle(result, exc=(
                ProposalTimeout(f"perform({name!r}) was not done in {timeout}s; its action "
                                "may still commit later"))), result)
        try:
            rpc = self.node.dispatch_on_leader(RPC_NAME, [name, arg_list], timeout)
        except ClosedError as exc:
            settle(result, exc=exc)
            return result
        # Settled on the worker: callbacks on `result` never run on the node's threads.
        rpc.add_done_callback(lambda f: self._worker.call(lambda: self._performed(result, f)))
        return result

    def _performed(self, result: Future[Any], rpc: Future[Any]) -> None:
        exc = rpc.exception()
        if exc is not None:
            settle(result, exc=exc)
            return
        out = rpc.result()
        if out is None:
            settle(result, None)
        elif isinstance(out, LogEntry):  # the method's action, committed and applied here
            error = self.committed.take_error(out.index)
            settle(result, exc=error) if error is not None else settle(result, out.data)
        else:
            settle(result, exc=ConfluxRaftError(
                f"unexpected reply from the leader's {RPC_NAME}: {out!r}"))

    # ---- close ----------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Close the node; pending futures reject with ClosedError. Never raises."""
        with self._pending_lock:
            if self._closed.is_set():
                return
            self._closed.set()
        try:
            self.node.close(timeout)
        except Exception:
            log.exception("closing node %s", self.node.id)
        err = self._closed_error()
        with self._pending_lock:
            pending = list(self._pending)
            self._pending.clear()
        for fut in pending:
            settle(fut, exc=err)
        self._worker.close()


def make_store(
    cfg: ConfluxConfig,
    create_store: Callable[..., Any],
    reducer: Reducer,
    initial_state: Any = None,
) -> ConfluxStore:
    return Replica(cfg, create_store, reducer, initial_state).store
