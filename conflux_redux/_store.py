"""The Conflux store: a pydux store whose actions go through a Raft log.

The inner pydux store (built by the `create_store` the enhancer is given) holds the
COMMITTED state: the node's apply thread dispatches each committed action into it, in
log order, under one lock. `dispatch` only proposes; `perform` runs a method on the
leader, against the leader's provisional state.

Locks, always taken in this order: the node's lock (held by the node's loop thread,
where methods run), then the store lock (inner store, applied index, reducer errors),
then the provisional cache lock. Nothing here waits for the node's lock while holding
the store lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

import orjson
from pydux.create_store import StoreDict

from conflux_raft import ClosedError, ConfluxRaftError, EntryKind, ProposalTimeout
from conflux_raft._node import RaftNode

from ._config import ConfluxConfig
from ._worker import Worker, settle

log = logging.getLogger("conflux_redux")

PERFORM = "conflux/perform"
"""The `type` of an action that `dispatch` turns into `perform(name, args, timeout)`:
``{"type": PERFORM, "name": "append", "args": ["foo"]}`` (see `perform_action`)."""

RPC_NAME = "conflux.perform"
"""The name of the rpc the store registers on its RaftNode."""

MAX_KEPT_ERRORS = 10_000  # reducer errors remembered for the futures that wait on them

Reducer = Callable[[Any, Any], Any]
Listener = Callable[[], Any]

_NOT_LEADER = object()


def check_action(action: Any) -> None:
    """Raise TypeError/ValueError unless `action` is a dict with a non-None `type` that
    orjson can encode."""
    if not isinstance(action, dict):
        raise TypeError(f"an action must be a dict, not {type(action).__name__}")
    if action.get("type") is None:
        raise ValueError('an action must have a non-None "type"')
    try:
        orjson.dumps(action)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise TypeError(f"the action cannot be encoded by orjson: {exc}") from exc


def perform_action(name: str, *args: Any, timeout: float | None = None) -> dict[str, Any]:
    """The action that, dispatched through a Conflux store, performs method `name`."""
    action: dict[str, Any] = {"type": PERFORM, "name": name, "args": list(args)}
    if timeout is not None:
        action["timeout"] = timeout
    return action


class ConfluxStore(StoreDict):  # type: ignore[misc]
    """pydux's StoreDict with Conflux's keys: every key is also a method."""

    def dispatch(self, action: Any) -> Any:
        return self["dispatch"](action)

    def get_state(self) -> Any:
        return self["get_state"]()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        unsubscribe: Callable[[], None] = self["subscribe"](listener)
        return unsubscribe

    def replace_reducer(self, next_reducer: Reducer) -> None:
        self["replace_reducer"](next_reducer)

    def get_provisional_state(self) -> Any:
        return self["get_provisional_state"]()

    def perform(
        self, name: str, args: Iterable[Any] = (), timeout: float | None = None
    ) -> Future[Any]:
        fut: Future[Any] = self["perform"](name, args, timeout)
        return fut

    def close(self, timeout: float | None = None) -> None:
        self["close"](timeout)

    @property
    def node(self) -> RaftNode:
        node: RaftNode = self["node"]
        return node

    def __enter__(self) -> ConfluxStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConfluxCore:
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
        self._reducer = reducer
        self._methods = dict(cfg.methods)
        self._inner = create_store(reducer, initial_state)
        self._inner_dispatch: Callable[[Any], Any] = self._inner["dispatch"]
        self._inner_get_state: Callable[[], Any] = self._inner["get_state"]
        self._lock = threading.RLock()  # the store lock
        self._applied = 0  # index of the last entry dispatched into the inner store
        self._errors: OrderedDict[int, BaseException] = OrderedDict()
        self._listeners: tuple[tuple[object, Listener], ...] = ()
        self._sub_lock = threading.Lock()
        self._prov_lock = threading.Lock()
        self._prov: dict[int, tuple[int, Any]] = {}  # index -> (term, state after it)
        self._pending: set[Future[Any]] = set()
        self._pending_lock = threading.Lock()
        self._closed = threading.Event()
        self._worker = Worker(f"conflux-redux-{cfg.id}")
        self.node = RaftNode(
            **cfg.node_options(), rpc={RPC_NAME: self._serve_perform}, autostart=False
        )
        self.node.on("committed", self._on_committed)
        try:
            self.node.start()
        except BaseException:
            self.node.close(0)
            raise
        self.store = ConfluxStore(
            dispatch=self.dispatch,
            subscribe=self.subscribe,
            get_state=self.get_state,
            replace_reducer=self.replace_reducer,
            get_provisional_state=self.get_provisional_state,
            perform=self.perform,
            close=self.close,
            node=self.node,
        )

    # ---- committed state ------------------------------------------------------------

    def get_state(self) -> Any:
        with self._lock:
            return self._inner_get_state()

    def _on_committed(self, data: Any, index: int) -> None:
        """The node's apply thread: once per committed entry, in log order."""
        with self._lock:
            try:
                self._inner_dispatch(data)
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
                "unchanged on every node", self.node.id, index, data, exc_info=failed)
            return
        for _, listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("%s: a listener raised", self.node.id)

    def _take_error(self, index: int) -> BaseException | None:
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

    def replace_reducer(self, next_reducer: Reducer) -> None:
        raise ConfluxRaftError(
            "replace_reducer is refused by a Conflux store: every replica must reduce the "
            "same log with the same reducer, and a function cannot travel through the log. "
            "Deploy the new reducer on every node with a fresh store (a new namespace).")

    # ---- provisional state ----------------------------------------------------------

    def get_provisional_state(self) -> Any:
        """The committed state with this node's uncommitted entries reduced on top.

        States after each such entry are cached by (index, term): by Log Matching an
        entry with the same index and term has the same log before it, so the highest
        cached entry still in the log can be reused and only what follows is reduced.
        """
        with self._lock:
            state = self._inner_get_state()
            applied = self._applied
        entries = [e for e in self.node.entries_after(applied) if e.kind is EntryKind.NORMAL]
        with self._prov_lock:
            cache = self._prov
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
            return self._reducer(state, action)
        except Exception:
            return state  # as when it commits: a reducer error leaves the state unchanged

    # ---- dispatch -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ClosedError(f"the store of node {self.node.id} is closed")

    def _track(self, fut: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.add(fut)
        fut.add_done_callback(self._untrack)

    def _untrack(self, fut: Future[Any]) -> None:
        with self._pending_lock:
            self._pending.discard(fut)

    def dispatch(self, action: Any) -> Future[Any]:
        if isinstance(action, dict) and action.get("type") == PERFORM:
            return self._dispatch_perform(action)
        check_action(action)
        self._check_open()
        appended = self.node.append(action)
        result: Future[Any] = Future()
        self._track(result)
        if self._closed.is_set():  # close() may have run between the check and _track
            settle(result, exc=ClosedError(f"the store of node {self.node.id} is closed"))

        def on_appended(f: Future[int]) -> None:
            exc = f.exception()
            if exc is not None:
                settle(result, exc=exc)
                return
            error = self._take_error(f.result())
            if error is not None:
                settle(result, exc=error)
            else:
                settle(result, action)

        appended.add_done_callback(on_appended)
        return result

    def _dispatch_perform(self, action: dict[str, Any]) -> Future[Any]:
        name = action.get("name")
        args = action.get("args", ())
        timeout = action.get("timeout")
        if not isinstance(args, (list, tuple)):
            raise TypeError(f'a {PERFORM} action\'s "args" must be a list')
        return self.perform(name, args, timeout)  # type: ignore[arg-type]

    # ---- methods --------------------------------------------------------------------

    def perform(
        self, name: str, args: Iterable[Any] = (), timeout: float | None = None
    ) -> Future[Any]:
        if not isinstance(name, str):
            raise TypeError(f"a method name must be a string, not {type(name).__name__}")
        if isinstance(args, (str, bytes, Mapping)):
            raise TypeError("args must be a list or tuple of arguments")
        arg_list = list(args)
        try:
            orjson.dumps(arg_list)
        except TypeError as exc:
            raise TypeError(f"the args cannot be encoded by orjson: {exc}") from exc
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
        ):
            raise ValueError("timeout must be None or a number of seconds >= 0")
        self._check_open()
        result: Future[Any] = Future()
        self._track(result)
        if name not in self._methods:
            settle(result, exc=KeyError(f"no method named {name!r}"))
            return result
        deadline = None if timeout is None else time.monotonic() + timeout
        if deadline is not None:
            self._worker.at(deadline, lambda: settle(result, exc=ProposalTimeout(
                f"perform({name!r}) was not done in {timeout}s; its action may still "
                "commit later")))
        if self._closed.is_set():
            settle(result, exc=ClosedError(f"the store of node {self.node.id} is closed"))
            return result
        if self.node.is_leader():
            self._perform_here(result, name, arg_list, deadline)
        else:
            self._perform_remote(result, name, arg_list, deadline)
        return result

    def _perform_here(
        self, result: Future[Any], name: str, args: list[Any], deadline: float | None
    ) -> None:
        """On the leader: run the method on the loop thread directly, so that its
        exception reaches the caller as it is (not rebuilt as a builtin class)."""

        def run() -> Any:
            if not self.node.is_leader():
                return _NOT_LEADER
            return self._run_method(name, args)

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is None and f.result() is _NOT_LEADER:
                self._worker.call(lambda: self._perform_remote(result, name, args, deadline))
            else:
                self._on_method_result(result, f)

        try:
            self.node.call_on_loop(run).add_done_callback(done)
        except ClosedError as exc:
            settle(result, exc=exc)

    def _perform_remote(
        self, result: Future[Any], name: str, args: list[Any], deadline: float | None
    ) -> None:
        if result.done():
            return
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            rpc = self.node.dispatch_on_leader(RPC_NAME, [name, args], remaining)
        except ClosedError as exc:
            settle(result, exc=exc)
            return
        rpc.add_done_callback(lambda f: self._on_method_result(result, f))

    def _on_method_result(self, result: Future[Any], f: Future[Any]) -> None:
        """Runs on the node's loop thread: hand over to the worker at once."""
        exc = f.exception()
        if exc is not None:
            self._worker.call(lambda: settle(result, exc=exc))
            return
        out = f.result()
        if out is None or result.done():
            self._worker.call(lambda: settle(result, None))
            return
        if not (isinstance(out, dict) and isinstance(out.get("index"), int)
                and isinstance(out.get("term"), int)):
            self._worker.call(lambda: settle(result, exc=ConfluxRaftError(
                f"unexpected reply from the leader's {RPC_NAME}: {out!r}")))
            return
        index, term, action = out["index"], out["term"], out.get("action")
        if self._closed.is_set():
            return  # close() rejects every pending future
        applied = self.node.applied_future(index, term)

        def on_applied(a: Future[None]) -> None:
            exc = a.exception()
            error = exc if exc is not None else self._take_error(index)
            if error is not None:
                self._worker.call(lambda: settle(result, exc=error))
            else:
                self._worker.call(lambda: settle(result, action))

        applied.add_done_callback(on_applied)

    def _serve_perform(self, name: Any, args: Any) -> Any:
        """The rpc, on the leader's loop thread with the node lock held."""
        if not isinstance(name, str) or not isinstance(args, list):
            raise TypeError("conflux.perform takes a method name and a list of arguments")
        return self._run_method(name, args)

    def _run_method(self, name: str, args: list[Any]) -> Any:
        """Leader, loop thread, node lock held: nothing else touches the log meanwhile,
        so the check a method makes against the provisional state and the append of its
        action are one atomic step."""
        method = self._methods.get(name)
        if method is None:
            raise KeyError(f"no method named {name!r}")
        out = method(self.get_provisional_state(), *args)
        if out is None:
            return None
        if isinstance(out, BaseException):
            raise out
        check_action(out)
        if out.get("type") == PERFORM:
            raise ValueError(f"method {name!r} returned a {PERFORM} action; return the "
                             "action to replicate instead")
        index, term = self.node.append_now(out)
        return {"index": index, "term": term, "action": out}

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
        err = ClosedError(f"the store of node {self.node.id} is closed")
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
    return ConfluxCore(cfg, create_store, reducer, initial_state).store
