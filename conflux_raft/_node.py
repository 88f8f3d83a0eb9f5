"""RaftNode: the runtime users touch. It drives a RaftCore with real time, a transport
and a storage. One loop thread owns the core (persist, send, then hand committed entries
on); one apply thread runs callbacks and resolves futures, so slow callbacks never delay
heartbeats."""

from __future__ import annotations

import builtins
import heapq
import itertools
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from ._codec import decode, encode
from ._config import NodeOptions, parse_options
from ._core import CoreConfig, RaftCore
from ._errors import (
    ClosedError,
    ConfigError,
    MalformedMessage,
    Overloaded,
    ProposalTimeout,
    RemoteError,
)
from ._filestore import FileStorage
from ._futures import settle
from ._storage import MemoryStorage, Storage
from ._transport import Transport
from ._types import Entry, EntryKind, Message, MsgType, Ready, Role

log = logging.getLogger("conflux_raft")

_EVENTS = ("committed", "leader_elected", "appended")
_TICKS_PER_HEARTBEAT = 2


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One entry of `RaftNode.get_log()`; `data` is the decoded value (None for internal
    entries)."""

    index: int
    term: int
    data: Any
    internal: bool


class RaftNode:
    """One member of a Raft cluster. See API.md for the options; `autostart=False` lets
    you register callbacks with `on()` before `start()`."""

    def __init__(
        self,
        id: str,
        cluster_size: int | None = None,
        members: Sequence[str] | None = None,
        channel: Mapping[str, Any] | None = None,
        election_timeout: tuple[float, float] = (0.3, 0.5),
        heartbeat_interval: float = 0.05,
        rpc: Mapping[str, Callable[..., Any]] | None = None,
        storage: Mapping[str, Any] | None = None,
        secret: str | bytes | None = None,
        autostart: bool = True,
        max_pending: int = 10_000,
    ) -> None:
        self.options = parse_options(
            id=id, cluster_size=cluster_size, members=members, channel=channel,
            election_timeout=election_timeout, heartbeat_interval=heartbeat_interval,
            storage=storage, secret=secret, max_pending=max_pending,
        )
        if rpc is not None and (
            not isinstance(rpc, Mapping) or not all(callable(f) for f in rpc.values())
        ):
            raise ConfigError("rpc: a dict of name -> function")
        self.id = id
        self._rpc: dict[str, Callable[..., Any]] = dict(rpc or {})
        self._handlers: dict[str, list[Callable[..., Any]]] = {e: [] for e in _EVENTS}
        self._inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._applyq: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._lock = threading.RLock()  # held by the loop thread while it uses the core
        self._fut_lock = threading.Lock()
        self._futures: dict[int, Future[int]] = {}  # own proposal seq -> future
        self._queued = 0  # proposals handed to the loop but not yet given a seq
        self._deadlines: list[tuple[float, int, str, Any]] = []
        self._rpc_ids = itertools.count(1)
        self._rpc_out: dict[str, tuple[Future[Any], str, list[Any], str | None]] = {}
        self._appliers: dict[int, list[tuple[int, Future[None]]]] = {}
        self._applied = 0
        self._counters = {"malformed": 0, "unknown_sender": 0}
        self._warned: set[str] = set()
        self._closed = threading.Event()
        self._started = False
        self._threads: list[threading.Thread] = []
        self._session = f"{id}:{uuid.uuid4().hex[:12]}"
        self._transport = self._make_transport(self.options)
        self._voters: tuple[str, ...] | None = self.options.members
        if self._voters is None:
            assert self.options.cluster_size is not None
            # Registers at once, so that a node beyond cluster_size is refused here.
            try:
                self._voters = tuple(self._transport.join(self.options.cluster_size, 0.0))
            except TimeoutError:
                pass
            except BaseException:
                self._transport.close()
                raise
        try:
            self._storage: Storage = self._make_storage(self.options)
        except BaseException:
            self._transport.close()
            raise
        self._core: RaftCore | None = None
        self._leader_seen: str | None = None
        if autostart:
            self.start()

    # ---- construction -------------------------------------------------------------

    @staticmethod
    def _make_transport(o: NodeOptions) -> Transport:
        if o.channel["name"] == "redis":
            from ._redis import RedisTransport

            opts = {k: v for k, v in o.channel.items() if k not in ("name", "namespace", "url")}
            url = o.channel.get("url", "redis://127.0.0.1:6379/0")
            return RedisTransport(o.id, url, o.namespace, **opts)
        from ._memory import MemoryTransport

        return MemoryTransport(o.id, o.namespace)

    @staticmethod
    def _make_storage(o: NodeOptions) -> Storage:
        if o.storage["name"] == "file":
            return FileStorage(o.storage["path"])
        return MemoryStorage()

    def _make_core(self, voters: tuple[str, ...]) -> RaftCore:
        o = self.options
        tick = o.heartbeat_interval / _TICKS_PER_HEARTBEAT
        lo, hi = (max(round(t / tick), _TICKS_PER_HEARTBEAT + 1) for t in o.election_timeout)
        hard_state, entries = self._storage.load()
        return RaftCore(
            CoreConfig(o.id, voters, self._session, election_ticks=(lo, hi),
                       heartbeat_ticks=_TICKS_PER_HEARTBEAT),
            random.Random(),
            hard_state,
            entries,
        )

    def start(self) -> None:
        """Start the threads (done by the constructor unless autostart=False)."""
        if self._started:
            return
        if self._closed.is_set():
            raise ClosedError("node is closed")
        self._started = True
        self._transport.start(self._deliver)
        for name, target in (("loop", self._loop), ("apply", self._apply_loop)):
            t = threading.Thread(target=target, name=f"conflux-{name}-{self.id}", daemon=True)
            self._threads.append(t)
            t.start()

    # ---- public API -----------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Call `callback` on the apply thread: committed(data, index) once per index in
        order; leader_elected(leader_id, term) when the leader changes; appended(data,
        index) when an entry enters this node's log. Returns a function that removes it."""
        if event not in self._handlers:
            raise ValueError(f"unknown event {event!r}; one of {_EVENTS}")
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._handlers[event] = [*self._handlers[event], callback]

        def off() -> None:
            self._handlers[event] = [c for c in self._handlers[event] if c is not callback]

        return off

    def append(self, data: Any, timeout: float | None = None) -> Future[int]:
        """Propose `data` (any orjson-encodable value). The future resolves with its index
        once it is committed and this node's committed callbacks have run for it."""
        self._check_open()
        raw = orjson.dumps(data)  # TypeError for what orjson cannot encode
        fut: Future[int] = Future()
        with self._fut_lock:
            if len(self._futures) + self._queued >= self.options.max_pending:
                fut.set_exception(Overloaded(
                    f"{self.options.max_pending} proposals of this node are in flight "
                    "(max_pending)"))
                return fut
            self._queued += 1
        self._inbox.put(("propose", raw, fut, self._deadline(timeout)))
        return fut

    def dispatch_on_leader(self, name: str, args: Sequence[Any] = (),
                           timeout: float | None = None) -> Future[Any]:
        """Run `rpc[name](*args)` on the leader; the future gets its return value, or the
        exception it raised or returned (a builtin class where possible, else RemoteError)."""
        self._check_open()
        if not isinstance(name, str):
            raise TypeError("name must be a string")
        args = list(args)
        orjson.dumps(args)
        fut: Future[Any] = Future()
        self._inbox.put(("rpc", name, args, fut, self._deadline(timeout)))
        return fut

    def is_leader(self) -> bool:
        core = self._core
        return core is not None and core.role is Role.LEADER

    @property
    def leader_id(self) -> str | None:
        return self._core.leader if self._core else None

    @property
    def term(self) -> int:
        return self._core.term if self._core else 0

    @property
    def commit_index(self) -> int:
        return self._core.log.commit if self._core else 0

    @property
    def voters(self) -> tuple[str, ...] | None:
        """The cluster's voting members (None until discovery has found them all)."""
        return self._voters

    def get_log(self) -> list[LogEntry]:
        """The entries this node still holds, oldest first."""
        with self._lock:
            if self._core is None:
                return []
            return [_log_entry(e) for e in self._core.log.entries_from(1)]

    def status(self) -> dict[str, Any]:
        """A snapshot of this node's state and counters, for monitoring."""
        with self._lock:
            core = self._core
            return {
                "id": self.id,
                "role": core.role.value if core else "joining",
                "term": core.term if core else 0,
                "leader": core.leader if core else None,
                "commit": core.log.commit if core else 0,
                "applied": self._applied,
                "log_length": core.log.last_index if core else 0,
                "match": core.progress() if core else {},
                "pending": len(self._futures),
                "voters": list(self._voters or ()),
                **self._counters,
                **{f"transport_{k}": v for k, v in self._transport.stats().items()},
            }

    def close(self, timeout: float | None = None) -> None:
        """Stop every thread, release the channel and storage, and reject pending futures
        with ClosedError. Never raises; closing twice is harmless."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._inbox.put(None)
        me = threading.current_thread()
        deadline = None if timeout is None else time.monotonic() + timeout
        loop = self._threads[0] if self._threads else None
        if loop is not None and loop is not me:
            loop.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        try:
            self._transport.close()
        except Exception:
            log.exception("closing the transport of %s", self.id)
        with self._lock:
            try:
                self._storage.close()
            except Exception:
                log.exception("closing the storage of %s", self.id)
            err = ClosedError(f"node {self.id} is closed")
            with self._fut_lock:
                futures = list(self._futures.values())
                self._futures.clear()
            for fut in futures:
                settle(fut, exc=err)
            for fut, *_ in self._rpc_out.values():
                settle(fut, exc=err)
            self._rpc_out.clear()
            for waiters in self._appliers.values():
                for _, f in waiters:
                    settle(f, exc=err)
            self._appliers.clear()
        self._applyq.put(None)
        for t in self._threads[1:]:
            if t is not me:
                t.join(None if deadline is None else max(deadline - time.monotonic(), 0))
        while True:  # whatever was queued after the loop stopped
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[0] in ("propose", "rpc", "call"):
                settle(item[-2] if item[0] != "call" else item[2], exc=err)

    def __enter__(self) -> RaftNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- for conflux_redux (advanced) ---------------------------------------------------

    def call_on_loop(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn()` on the loop thread, with the core's lock held."""
        self._check_open()
        fut: Future[Any] = Future()
        self._inbox.put(("call", fn, fut))
        return fut

    def append_now(self, data: Any) -> tuple[int, int]:
        """Leader only, from an rpc function or `call_on_loop`: append `data` in this term
        at once and return (index, term). It is never retried in another term, so a
        decision taken against this leader's log holds only if the entry commits."""
        core = self._core
        if core is None or core.role is not Role.LEADER:
            raise ProposalTimeout("not the leader any more")
        entry = core.append_now(orjson.dumps(data))
        return entry.index, entry.term

    def applied_future(self, index: int, term: int) -> Future[None]:
        """A future resolved once entry `index` is applied here with `term`, or rejected
        with ProposalTimeout if another entry took that index."""
        fut: Future[None] = Future()
        with self._lock:
            if self._closed.is_set():
                fut.set_exception(ClosedError(f"node {self.id} is closed"))
                return fut
            core = self._core
            if core is not None and index <= self._applied:
                t = core.log.term_at(index)
                if t == term:
                    fut.set_result(None)
                else:
                    fut.set_exception(ProposalTimeout(
                        f"entry {index} of term {term} was replaced: it was not applied"))
                return fut
            self._appliers.setdefault(index, []).append((term, fut))
        return fut

    def entries_after(self, index: int) -> list[Entry]:
        """The entries after `index` that this node holds (committed or not)."""
        with self._lock:
            return self._core.log.entries_from(index + 1) if self._core else []

    # ---- the loop thread ------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError("timeout must be >= 0")
        return time.monotonic() + timeout

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise ClosedError(f"node {self.id} is closed")

    def _deliver(self, raw: bytes) -> None:
        try:
            msg = decode(raw, self.options.secret)
        except MalformedMessage as exc:
            self._counters["malformed"] += 1
            n = self._counters["malformed"]
            if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: logged once in a while
                log.warning("%s dropped a malformed message (%d so far): %s", self.id, n, exc)
            return
        self._inbox.put(("msg", msg))

    def _loop(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("conflux node %s stopped on an internal error", self.id)
            threading.Thread(target=self.close, daemon=True).start()

    def _run(self) -> None:
        while self._voters is None:
            if self._closed.is_set():
                return
            assert self.options.cluster_size is not None
            try:
                self._voters = tuple(self._transport.join(self.options.cluster_size, 0.2))
            except TimeoutError:
                continue
        with self._lock:
            self._core = self._make_core(self._voters)
        tick = self.options.heartbeat_interval / _TICKS_PER_HEARTBEAT
        next_tick = time.monotonic() + tick
        inbox = self._inbox
        while not self._closed.is_set():
            items: list[tuple[Any, ...] | None] = []
            try:
                items.append(inbox.get(timeout=max(next_tick - time.monotonic(), 0)))
                while len(items) < 4096:
                    items.append(inbox.get_nowait())
            except queue.Empty:
                pass
            with self._lock:
                if self._closed.is_set():
                    # leave what was taken for close() to reject
                    for item in items:
                        if item is not None:
                            self._inbox.put(item)
                    return
                core = self._core
                for item in items:
                    if item is not None:
                        self._handle(core, item)
                now = time.monotonic()
                if now >= next_tick:
                    core.tick()
                    next_tick = max(next_tick + tick, now)
                    self._expire(now)
                while core.has_ready():
                    self._process(core, core.ready())
                self._after_ready(core)

    def _handle(self, core: RaftCore, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "msg":
            self._on_message(core, item[1])
        elif kind == "propose":
            _, raw, fut, deadline = item
            with self._fut_lock:
                self._queued -= 1
                if fut.done():
                    return
                seq = core.propose(raw)
                self._futures[seq] = fut
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, seq, "propose", None))
        elif kind == "rpc":
            _, name, args, fut, deadline = item
            rid = f"{self._session}:{next(self._rpc_ids)}"
            self._rpc_out[rid] = (fut, name, args, None)
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, 0, "rpc", rid))
            self._send_rpc(core, rid)
        elif kind == "call":
            _, fn, fut = item
            try:
                settle(fut, fn())
            except Exception as exc:
                settle(fut, exc=exc)

    def _on_message(self, core: RaftCore, m: Message) -> None:
        if m.dst != self.id:
            return
        assert self._voters is not None
        if m.src not in self._voters:
            self._counters["unknown_sender"] += 1
            if m.src not in self._warned:
                self._warned.add(m.src)
                log.warning(
                    "%s ignores messages from %r, which is not a voter of this cluster %s: "
                    "is another node using the same namespace?", self.id, m.src,
                    list(self._voters))
            return
        if m.type is MsgType.RPC:
            self._serve_rpc(core, m)
        elif m.type is MsgType.RPC_RESP:
            self._on_rpc_resp(core, m)
        else:
            core.step(m)

    def _process(self, core: RaftCore, rd: Ready) -> None:
        # Persist, then send, then hand committed entries to the apply thread, then advance.
        if rd.hard_state is not None or rd.entries:
            self._storage.save(rd.hard_state, rd.entries)
        if rd.messages:
            secret = self.options.secret
            self._transport.send([(m.dst, encode(m, secret)) for m in rd.messages])
        if rd.entries and self._handlers["appended"]:
            self._applyq.put(("appended", rd.entries))
        if rd.committed:
            with self._fut_lock:
                done = [
                    (e, self._futures.pop(e.seq, None))
                    for e in rd.committed
                    if e.client == self._session
                ]
            self._applyq.put(("committed", rd.committed, done))
        core.advance(rd)

    def _after_ready(self, core: RaftCore) -> None:
        leader = core.leader
        if leader != self._leader_seen:
            old, self._leader_seen = self._leader_seen, leader
            if old is not None:  # rpcs in flight to the old leader have unknown outcomes
                for rid, (fut, _, _, sent_to) in list(self._rpc_out.items()):
                    if sent_to is not None and sent_to != leader:
                        del self._rpc_out[rid]
                        settle(fut, exc=ProposalTimeout(
                            "the leader changed before the rpc was answered; it may have run"))
            if leader is not None:
                self._applyq.put(("leader", leader, core.term))
                for rid, (_, _, _, sent_to) in list(self._rpc_out.items()):
                    if sent_to is None:
                        self._send_rpc(core, rid)

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, seq, kind, rid = heapq.heappop(self._deadlines)
            if kind == "propose":
                with self._fut_lock:
                    fut = self._futures.pop(seq, None)
                if fut is not None:
                    settle(fut, exc=ProposalTimeout(
                        "not committed in time; it may still commit later"))
            else:
                entry = self._rpc_out.pop(rid, None)
                if entry is not None:
                    settle(entry[0], exc=ProposalTimeout(
                        "the rpc was not answered in time; it may have run"))

    # ---- rpc ------------------------------------------------------------------------

    def _send_rpc(self, core: RaftCore, rid: str) -> None:
        fut, name, args, _ = self._rpc_out[rid]
        leader = core.leader
        if leader is None:
            return  # waits for a leader
        if leader == self.id:
            del self._rpc_out[rid]
            ok, value = self._run_rpc(name, args)
            settle(fut, value) if ok else settle(fut, exc=_rebuild(value))
            return
        self._rpc_out[rid] = (fut, name, args, leader)
        msg = Message(MsgType.RPC, self.id, leader, context=rid, payload=[name, args])
        self._transport.send([(leader, encode(msg, self.options.secret))])

    def _run_rpc(self, name: str, args: list[Any]) -> tuple[bool, Any]:
        fn = self._rpc.get(name)
        if fn is None:
            return False, ["KeyError", f"no rpc named {name!r}"]
        try:
            result = fn(*args)
            if isinstance(result, BaseException):
                raise result
            orjson.dumps(result)
            return True, result
        except Exception as exc:
            message = exc.args[0] if len(exc.args) == 1 else str(exc)
            return False, [type(exc).__name__, str(message)]

    def _serve_rpc(self, core: RaftCore, m: Message) -> None:
        if core.role is not Role.LEADER:
            payload: Any = {"redirect": core.leader}
        elif not (isinstance(m.payload, list) and len(m.payload) == 2
                  and isinstance(m.payload[0], str) and isinstance(m.payload[1], list)):
            payload = {"err": ["ValueError", "malformed rpc"]}
        else:
            ok, value = self._run_rpc(m.payload[0], m.payload[1])
            payload = {"ok": value} if ok else {"err": value}
        resp = Message(MsgType.RPC_RESP, self.id, m.src, context=m.context, payload=payload)
        self._transport.send([(m.src, encode(resp, self.options.secret))])

    def _on_rpc_resp(self, core: RaftCore, m: Message) -> None:
        out = self._rpc_out.get(m.context)
        if out is None or not isinstance(m.payload, dict):
            return
        fut, name, args, _ = out
        if "redirect" in m.payload:  # it did not run: send again once a leader is known
            self._rpc_out[m.context] = (fut, name, args, None)
            if core.leader != m.src:
                self._send_rpc(core, m.context)
            return
        del self._rpc_out[m.context]
        if "ok" in m.payload:
            settle(fut, m.payload["ok"])
        else:
            settle(fut, exc=_rebuild(m.payload.get("err")))

    # ---- the apply thread -----------------------------------------------------------------

    def _apply_loop(self) -> None:
        while True:
            item = self._applyq.get()
            if item is None:
                return
            try:
                self._apply(item)
            except Exception:
                log.exception("%s: applying %s failed", self.id, item[0])

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self._handlers[event]:
            try:
                cb(*args)
            except Exception:
                log.exception("%s: a %s callback raised", self.id, event)

    def _apply(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "leader":
            self._emit("leader_elected", item[1], item[2])
        elif kind == "appended":
            for e in item[1]:
                if e.kind is EntryKind.NORMAL:
                    self._emit("appended", orjson.loads(e.data), e.index)
        elif kind == "committed":
            entries: tuple[Entry, ...] = item[1]
            for e in entries:
                if e.kind is EntryKind.NORMAL:
                    self._emit("committed", orjson.loads(e.data), e.index)
                with self._lock:
                    self._applied = e.index
                    waiters = self._appliers.pop(e.index, ())
                for term, f in waiters:
                    if term == e.term:
                        settle(f, None)
                    else:
                        settle(f, exc=ProposalTimeout(
                            f"entry {e.index} of term {term} was replaced: it was not applied"))
            for e, fut in item[2]:
                if fut is not None:
                    settle(fut, e.index)


def _log_entry(e: Entry) -> LogEntry:
    internal = e.kind is not EntryKind.NORMAL
    return LogEntry(e.index, e.term, None if internal else orjson.loads(e.data), internal)


def _rebuild(err: Any) -> BaseException:
    """An exception of the same builtin class as the remote one, else RemoteError."""
    if not (isinstance(err, list) and len(err) == 2):
        return RemoteError("Error", repr(err))
    name, message = str(err[0]), str(err[1])
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RemoteError(name, message)
