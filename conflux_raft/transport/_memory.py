"""In-process transport: one hub per namespace hands each payload straight to its receiver.

The hub also carries the fault hooks that tests use (partition, isolate, drop, delay),
and the member list that `MemoryDiscovery` keeps.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import ClassVar

from .._errors import ClosedError, ConfigError

__all__ = ["MemoryHub", "MemoryTransport"]


class MemoryHub:
    """The process-wide meeting point of one namespace: membership, delivery and faults.

    Obtain it with `MemoryHub.get(namespace)`; every method is thread-safe. Fault rules
    apply to messages as they are sent: a message to oneself crosses no partition.
    """

    _hubs: ClassVar[dict[str, MemoryHub]] = {}
    _hubs_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)  # a member registered, or a close
        self._due = threading.Condition(self._lock)  # the delayed queue changed
        self._members: list[str] = []
        self._endpoints: dict[str, MemoryTransport] = {}
        self._groups: dict[str, int] | None = None
        self._isolated: set[str] = set()
        self._drop_rate = 0.0
        self._delay = 0.0
        self._jitter = 0.0
        self._rng = random.Random()
        self._pending: list[tuple[float, int, str, bytes]] = []
        self._seq = itertools.count()
        self._timer: threading.Thread | None = None

    @classmethod
    def get(cls, namespace: str) -> MemoryHub:
        """The hub of `namespace`, created on first use."""
        with cls._hubs_lock:
            hub = cls._hubs.get(namespace)
            if hub is None:
                hub = cls._hubs[namespace] = cls(namespace)
            return hub

    @classmethod
    def reset(cls, namespace: str) -> None:
        """Forget `namespace`: the next `get` returns a fresh hub. Transports still attached
        to the old hub keep it, healed and without delayed messages."""
        with cls._hubs_lock:
            hub = cls._hubs.pop(namespace, None)
        if hub is not None:
            with hub._lock:
                hub._clear_faults()
                hub._pending.clear()
                hub._due.notify_all()

    @property
    def members(self) -> list[str]:
        """Every id registered by `join`, in registration order."""
        with self._lock:
            return list(self._members)

    @property
    def started(self) -> list[str]:
        """Ids of the transports currently receiving."""
        with self._lock:
            return list(self._endpoints)

    # ---- fault hooks -------------------------------------------------------------------

    def partition(self, *groups: str | Iterable[str]) -> None:
        """Let messages flow only within a group (an id or an iterable of ids); ids named
        in no group form one more group."""
        assigned: dict[str, int] = {}
        for index, group in enumerate(groups):
            for node_id in [group] if isinstance(group, str) else group:
                if node_id in assigned:
                    raise ConfigError(f"partition: {node_id!r} is in more than one group")
                assigned[node_id] = index
        with self._lock:
            self._groups = assigned

    def isolate(self, *node_ids: str) -> None:
        """Cut each of `node_ids` off from every other node, both ways."""
        with self._lock:
            self._isolated.update(node_ids)

    def drop(self, rate: float, seed: int | None = None) -> None:
        """Drop each message with probability `rate` (0 turns it off), drawn from a
        `random.Random(seed)`."""
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise ConfigError(f"drop: rate must be a number in [0, 1], got {rate!r}")
        with self._lock:
            self._drop_rate = float(rate)
            self._rng = random.Random(seed)

    def delay(self, seconds: float, jitter: float = 0.0, seed: int | None = None) -> None:
        """Hold each message for `seconds` plus a uniform draw in `[0, jitter]` (which
        reorders them) before delivering it; 0 turns it off."""
        for name, value in (("seconds", seconds), ("jitter", jitter)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"delay: {name} must be a number >= 0, got {value!r}")
        with self._lock:
            self._delay = float(seconds)
            self._jitter = float(jitter)
            if seed is not None:
                self._rng = random.Random(seed)

    def heal(self) -> None:
        """Remove every fault rule; messages already delayed are still delivered."""
        with self._lock:
            self._clear_faults()

    def _clear_faults(self) -> None:
        self._groups = None
        self._isolated.clear()
        self._drop_rate = 0.0
        self._delay = 0.0
        self._jitter = 0.0

    # ---- delivery ----------------------------------------------------------------------

    def _passes(self, src: str, dst: str) -> bool:
        if src != dst:
            if src in self._isolated or dst in self._isolated:
                return False
            groups = self._groups
            if groups is not None and groups.get(src, -1) != groups.get(dst, -1):
                return False
        return not (self._drop_rate and self._rng.random() < self._drop_rate)

    def _send(self, src: str, batch: Sequence[tuple[str, bytes]]) -> int:
        """Route `batch` from `src`; return how many messages were dropped."""
        now: list[tuple[MemoryTransport, bytes]] = []
        dropped = 0
        with self._lock:
            for dst, payload in batch:
                if not self._passes(src, dst):
                    dropped += 1
                elif self._delay or self._jitter:
                    hold = self._delay + self._rng.uniform(0.0, self._jitter)
                    heapq.heappush(
                        self._pending, (time.monotonic() + hold, next(self._seq), dst, payload)
                    )
                else:
                    target = self._endpoints.get(dst)
                    if target is None:
                        dropped += 1
                    else:
                        now.append((target, payload))
            if self._pending:
                self._due.notify()
                if self._timer is None:
                    self._timer = threading.Thread(
                        target=self._run_timer, name=f"conflux-memory-delay-{self.namespace}",
                        daemon=True,
                    )
                    self._timer.start()
        for target, payload in now:
            target._receive(payload)
        return dropped

    def _run_timer(self) -> None:
        """Deliver delayed messages when due; exit once none is left."""
        while True:
            with self._lock:
                while True:
                    if not self._pending:
                        self._timer = None
                        return
                    wait = self._pending[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._due.wait(wait)
                now = time.monotonic()
                ready: list[tuple[MemoryTransport, bytes]] = []
                while self._pending and self._pending[0][0] <= now:
                    _, _, dst, payload = heapq.heappop(self._pending)
                    target = self._endpoints.get(dst)
                    if target is not None:
                        ready.append((target, payload))
            for target, payload in ready:
                target._receive(payload)


class MemoryTransport:
    """A node's endpoint on the `MemoryHub` of `namespace`: `send` calls the receiver's
    `deliver` directly, in the sender's thread, unless a fault rule drops the message."""

    def __init__(self, node_id: str, namespace: str = "default") -> None:
        for name, value in (("node_id", node_id), ("namespace", namespace)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty str, got {value!r}")
        self.node_id = node_id
        self.namespace = namespace
        self.hub = MemoryHub.get(namespace)
        self._deliver: Callable[[bytes], None] | None = None
        self._closed = False
        self._counts_lock = threading.Lock()
        self._sent = 0
        self._received = 0
        self._dropped = 0

    def __repr__(self) -> str:
        return f"MemoryTransport({self.node_id!r}, {self.namespace!r})"

    def start(self, deliver: Callable[[bytes], None]) -> None:
        """Receive from now on: this id's messages go to `deliver` (replacing any earlier
        transport of the same id)."""
        hub = self.hub
        with hub._lock:
            if self._closed:
                raise ClosedError(f"{self!r} is closed")
            if self._deliver is not None:
                raise RuntimeError(f"{self!r} is already started")
            self._deliver = deliver
            hub._endpoints[self.node_id] = self

    def send(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Hand each payload to its destination now; unknown, unstarted or faulted
        destinations count as dropped."""
        if self._closed:
            with self._counts_lock:
                self._dropped += len(batch)
            return
        dropped = self.hub._send(self.node_id, batch)
        with self._counts_lock:
            self._sent += len(batch) - dropped
            self._dropped += dropped

    def _receive(self, payload: bytes) -> None:
        deliver = self._deliver
        if deliver is None or self._closed:
            return
        with self._counts_lock:
            self._received += 1
        deliver(payload)

    def health(self) -> str | None:
        """Always None: the hub never fails."""
        return None

    def stats(self) -> dict[str, int]:
        """Counters: sent, received, dropped, reconnects (always 0 here)."""
        with self._counts_lock:
            return {
                "sent": self._sent,
                "received": self._received,
                "dropped": self._dropped,
                "reconnects": 0,
            }

    def close(self) -> None:
        """Stop receiving; idempotent. A later transport of the same id is left alone."""
        hub = self.hub
        with hub._lock:
            if self._closed:
                return
            self._closed = True
            if hub._endpoints.get(self.node_id) is self:
                del hub._endpoints[self.node_id]
