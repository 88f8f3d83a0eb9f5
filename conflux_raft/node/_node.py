"""RaftNode: the runtime users touch. It drives a RaftCore with real time, a transport
and a storage, on two threads: the loop thread owns the core (see `_loop`), the apply
thread runs callbacks and settles futures (see `_apply`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from .._errors import ClosedError, ConfigError
from ..core import Entry, Role
from ..storage import FileStorage, MemoryStorage, Storage
from ..transport import (
    Discovery,
    MemoryDiscovery,
    MemoryTransport,
    RedisDiscovery,
    RedisTransport,
    Transport,
)
from ._apply import LogEntry
from ._commands import CallRpc, Propose, Read, to_json
from ._loop import Loop
from ._options import NodeOptions, parse_options
from ._publish import StatusPublisher, committed_tail, shown

log = logging.getLogger("conflux_raft")

_DISCOVERY_KEYS = ("socket_timeout", "connect_timeout")


class RaftNode:
    """One member of a Raft cluster. See the README for the options; `autostart=False`
    lets you register callbacks with `on()` before `start()`.

    With `snapshot`, the log is compacted: every `snapshot_every` applied entries,
    `snapshot()` is called on the apply thread and returns the application's state as of
    the last applied entry (bytes); `restore(data)` replaces the application's state
    with a snapshot's (at start, and when the leader sends one). Without `snapshot`, the
    log grows without bound.
    """

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
        snapshot: Callable[[], bytes] | None = None,
        restore: Callable[[bytes], Any] | None = None,
        snapshot_every: int = 10_000,
    ) -> None:
        self.options = parse_options(
            id=id, cluster_size=cluster_size, members=members, channel=channel,
            election_timeout=election_timeout, heartbeat_interval=heartbeat_interval,
            storage=storage, secret=secret, max_pending=max_pending,
            snapshot_every=snapshot_every,
        )
        if rpc is not None and (
            not isinstance(rpc, Mapping) or not all(callable(f) for f in rpc.values())
        ):
            raise ConfigError("rpc: a dict of name -> function")
        for name, fn in (("snapshot", snapshot), ("restore", restore)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name}: a function is required")
        if snapshot is not None and restore is None:
            raise ConfigError("restore: required with snapshot (a node restores the "
                              "snapshots it receives, and its own at restart)")
        self.id = id
        self._started = False
        self._stopped_by: str | None = None
        self._threads: list[threading.Thread] = []
        session = f"{id}.{time.time_ns() // 1000}"  # the loop raises it above storage's
        store = _open_storage(self.options)  # first: its lock keeps a second node out
        transport: Transport | None = None
        discovery: Discovery | None = None
        try:
            transport = _open_transport(self.options)
            voters = self._voters(store)
            if self.options.cluster_size is not None:
                discovery = _open_discovery(self.options)
                if voters is None:
                    # Registers at once, so that a node beyond cluster_size is refused here.
                    with contextlib.suppress(TimeoutError):
                        voters = tuple(discovery.join(self.options.cluster_size, 0.0))
        except BaseException:
            for part in (transport, discovery, store):
                if part is not None:
                    part.close()
            raise
        self._loop = Loop(self.options, session, transport, discovery, store,
                          dict(rpc or {}), voters, snapshot, restore)
        self._publisher = (StatusPublisher(id, transport, self._report)
                           if isinstance(transport, RedisTransport) else None)
        if autostart:
            self.start()

    def _voters(self, store: Storage) -> tuple[str, ...] | None:
        """The voters this node must use, if it knows them yet: the ones its storage keeps
        win over discovery (Redis may have lost its list); `members` wins over both."""
        durable = store.load_voters()
        members = self.options.members
        if members is not None:
            if durable is not None and durable != members:
                log.warning("%s: members %s differ from the voters its storage keeps %s; "
                            "using members (changing voters this way is not safe)",
                            self.id, list(members), list(durable))
            if durable != members:
                store.save_voters(members)
            return members
        if durable is not None and len(durable) != self.options.cluster_size:
            log.warning("%s: cluster_size %s, but its storage keeps %d voters %s: keeping "
                        "them", self.id, self.options.cluster_size, len(durable), list(durable))
        return durable

    def start(self) -> None:
        """Start the threads (done by the constructor unless autostart=False)."""
        if self._started:
            return
        if self._loop.closed.is_set():
            raise ClosedError("node is closed")
        self._started = True
        self._loop.transport.start(self._loop.deliver)
        for name, body in (("loop", self._loop.run), ("apply", self._loop.applier.run)):
            t = threading.Thread(target=self._run, args=(body,),
                                 name=f"conflux-{name}-{self.id}", daemon=True)
            self._threads.append(t)
            t.start()
        if self._publisher is not None:
            self._publisher.start()

    # ---- proposing ------------------------------------------------------------------------

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[[], None]:
        """Call `callback` on the apply thread: committed(data, index) once per index in
        order; leader_elected(leader_id, term) when the leader changes; appended(data,
        index) when an entry enters this node's log; restored(index) once `restore` has
        installed a snapshot up to `index` (committed callbacks go on from index + 1).
        Returns a function that removes it."""
        return self._loop.applier.on(event, callback)

    def append(self, data: Any, timeout: float | None = None) -> Future[int]:
        """Propose `data` (any orjson-encodable value). The future resolves with its index
        once it is committed and this node's committed callbacks have run for it."""
        self._check_open()
        raw = to_json(data)  # TypeError for what orjson cannot encode
        fut: Future[int] = Future()
        self._loop.submit(Propose(raw, fut, _deadline(timeout)))
        return fut

    def dispatch_on_leader(self, name: str, args: Sequence[Any] = (),
                           timeout: float | None = None) -> Future[Any]:
        """Run `rpc[name](*args)` on the leader's loop thread. The future gets its return
        value, or the exception it raised or returned (the exception itself on the leader;
        elsewhere a builtin class where possible, else RemoteError). A function that
        returns `Append(data)` appends `data` to the leader's log at once, in its term:
        the future then resolves with that `LogEntry` once it is applied here.

        The function runs only once the leader has confirmed with a quorum that it
        still leads after the call reached it, and applied that read index: it sees
        every entry committed before the call began. The future resolves once the
        leader's log as it ran is committed and applied here. A lost message is sent
        again, and the function runs at most once per call."""
        self._check_open()
        if not isinstance(name, str):
            raise TypeError("name must be a string")
        args = list(args)
        to_json(args)  # TypeError or ValueError now, rather than on the leader
        fut: Future[Any] = Future()
        self._loop.submit(CallRpc(name, args, fut, _deadline(timeout)))
        return fut

    def read(self, timeout: float | None = None) -> Future[int]:
        """A linearizable read (ReadIndex, Raft thesis §6.4). The future resolves with an
        index once this node has applied it and its committed callbacks have run: it
        holds every entry committed before the call began. The leader confirms with a
        quorum that it still leads before it answers; a follower asks the leader."""
        self._check_open()
        fut: Future[int] = Future()
        self._loop.submit(Read(fut, _deadline(timeout)))
        return fut

    # ---- reading ------------------------------------------------------------------------

    def is_leader(self) -> bool:
        core = self._loop.core
        return core is not None and core.role is Role.LEADER

    @property
    def leader_id(self) -> str | None:
        core = self._loop.core
        return core.leader if core else None

    @property
    def term(self) -> int:
        core = self._loop.core
        return core.term if core else 0

    @property
    def commit_index(self) -> int:
        core = self._loop.core
        return core.log.commit if core else 0

    @property
    def closed(self) -> bool:
        """Whether the node is closed (by `close()`, or after an internal error)."""
        return self._loop.closed.is_set()

    @property
    def voters(self) -> tuple[str, ...] | None:
        """The cluster's voting members (None until discovery has found them all)."""
        return self._loop.voters

    def get_log(self) -> list[LogEntry]:
        """The entries this node still holds, oldest first."""
        return [LogEntry.of(e) for e in self.entries_after(0)]

    def entries_after(self, index: int) -> list[Entry]:
        """The entries this node holds after `index`, committed or not, as the core keeps
        them (`data` is the orjson encoding). From an rpc function on the leader, this is
        the log it decides against."""
        with self._loop.lock:
            core = self._loop.core
            return core.log.entries_from(index + 1) if core else []

    def status(self) -> dict[str, Any]:
        """A snapshot of this node's state and counters, for monitoring (README, "Seeing
        a cluster", lists the keys)."""
        loop = self._loop
        with loop.lock:
            core = loop.core
            # undecodable, and decoded but breaking what a correct peer guarantees
            malformed = loop.counters["malformed"] + (core.malformed if core else 0)
            return {
                "id": self.id,
                "role": core.role.value.replace("_", "-") if core else "joining",
                "term": core.term if core else 0,
                "leader": core.leader if core else None,
                "commit_index": core.log.commit if core else 0,
                "applied_index": loop.applier.applied,
                "last_index": core.log.last_index if core else 0,
                "snapshot_index": core.snapshot.index if core and core.snapshot else 0,
                "voters": list(loop.voters or ()),
                "progress": core.progress() if core else {},
                "pending": loop.pending(),
                **loop.counters,
                "malformed": malformed,
                "transport": {"connected": loop.transport.health() is None,
                              **loop.transport.stats(), "malformed": malformed},
            }

    def _report(self) -> dict[str, Any]:
        """What the node publishes to Redis: status() and its last committed user entries."""
        with self._loop.lock:
            core = self._loop.core
            tail = committed_tail(core.log) if core else []
            status = self.status()
        return {**status, "tail": [shown(e) for e in tail]}

    # ---- closing ------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Stop every thread, release the channel and storage, and reject pending futures
        with ClosedError. Never raises; closing twice is harmless."""
        loop = self._loop
        if loop.closed.is_set():
            return
        loop.closed.set()
        loop.stop()
        if loop.discovery is not None:
            _quietly(loop.discovery.close, "the discovery", self.id)
        if self._publisher is not None:
            self._publisher.close(timeout)
        me = threading.current_thread()
        deadline = None if timeout is None else time.monotonic() + timeout

        def join(t: threading.Thread) -> None:
            if t is not me:
                t.join(None if deadline is None else max(deadline - time.monotonic(), 0))

        if self._threads:
            join(self._threads[0])
        _quietly(loop.transport.close, "the transport", self.id)
        with loop.lock:
            _quietly(loop.storage.close, "the storage", self.id)
        err = self._closed_error()
        loop.reject_all(err)
        loop.applier.put(None)
        for t in self._threads[1:]:
            join(t)
        loop.reject_queued(err)

    def __enter__(self) -> RaftNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._loop.closed.is_set():
            raise self._closed_error()

    def _closed_error(self) -> ClosedError:
        why = f" ({self._stopped_by})" if self._stopped_by else ""
        return ClosedError(f"node {self.id} is closed{why}")

    def _run(self, body: Callable[[], None]) -> None:
        """A thread's body; if it raises, the node stops (and says why from then on)."""
        try:
            body()
        except Exception as exc:
            log.exception("conflux node %s stopped: %s", self.id, exc)
            self._stopped_by = f"it stopped: {exc}"
            threading.Thread(target=self.close, daemon=True).start()


def _deadline(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    return time.monotonic() + timeout


def _quietly(fn: Callable[[], None], what: str, node_id: str) -> None:
    try:
        fn()
    except Exception:
        log.exception("closing %s of %s", what, node_id)


def _redis_url(o: NodeOptions) -> str:
    return str(o.channel["url"])


def _open_transport(o: NodeOptions) -> Transport:
    if o.channel["name"] == "redis":
        opts = {k: v for k, v in o.channel.items() if k not in ("name", "namespace", "url")}
        return RedisTransport(o.id, _redis_url(o), o.namespace, **opts)
    return MemoryTransport(o.id, o.namespace)


def _open_discovery(o: NodeOptions) -> Discovery:
    if o.channel["name"] == "redis":
        opts = {k: v for k, v in o.channel.items() if k in _DISCOVERY_KEYS}
        return RedisDiscovery(o.id, _redis_url(o), o.namespace, **opts)
    return MemoryDiscovery(o.id, o.namespace)


def _open_storage(o: NodeOptions) -> Storage:
    if o.storage["name"] == "file":
        return FileStorage(o.storage["path"])
    return MemoryStorage()
