"""A small in-memory cluster of cores for step-by-step tests (etcd's raft_test.go network).

Nothing moves until the test says so: `tick`, `propose` and `flush` queue messages in
`in_flight`; `deliver` hands each queued message to its destination once; `stabilize`
delivers until the cluster falls silent. Links can be dropped, cut or isolated, message
types ignored, and nodes crashed and restarted from what they persisted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ..core import CoreConfig, Entry, EntryKind, HardState, Message, MsgType, RaftCore, Role
from ..storage import MemoryStorage
from ._checks import SafetyChecker
from ._host import Host


class Cluster:
    """Cores named `ids` (or n1..nK for an int), with CoreConfig `options` shared by all.
    With `check`, Raft's safety properties are checked each time a node is flushed.

    >>> c = Cluster(3)
    >>> c.elect("n1")
    >>> seq = c.propose("n2", b'"hello"')
    >>> c.run(ticks=2)  # a heartbeat tells the followers what is committed
    >>> c.applied("n3")
    [b'"hello"']
    """

    def __init__(self, ids: Sequence[str] | int = 3, *, seed: int = 0,
                 core_class: type[RaftCore] = RaftCore, check: bool = True,
                 **options: Any) -> None:
        names = [f"n{i}" for i in range(1, ids + 1)] if isinstance(ids, int) else list(ids)
        base = CoreConfig(id=names[0], voters=tuple(names), session="", **options)
        self.seed = seed
        self.hosts = {
            i: Host(replace(base, id=i), self._rng(i, 1), core_class) for i in names
        }
        self.in_flight: list[Message] = []
        self.sent: list[Message] = []  # every message ever sent, in order
        self._links: dict[tuple[str, str], float] = {}  # (src, dst) -> chance of loss
        self._ignored: dict[MsgType, bool] = {}
        self._loss = random.Random(seed)
        self.checker = SafetyChecker() if check else None  # run after every flush

    # ---- nodes --------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        return list(self.hosts)

    def __getitem__(self, node: str) -> RaftCore:
        return self.hosts[node].live()

    def leader(self) -> str | None:
        """The running leader of the highest term, if any."""
        best: tuple[int, str] | None = None
        for i, h in self.hosts.items():
            if h.up and h.live().role is Role.LEADER and (best is None or h.live().term > best[0]):
                best = (h.live().term, i)
        return best[1] if best else None

    def applied(self, node: str) -> list[bytes]:
        """The data of the user entries that `node` applied, in order."""
        return [e.data for e in self.hosts[node].applied if e.kind is EntryKind.NORMAL]

    def log(self, node: str) -> list[Entry]:
        return self.hosts[node].live().log.entries_from(1)

    def crash(self, node: str) -> None:
        """Stop `node`: its storage stays, and messages to it are lost."""
        self.hosts[node].crash()
        if self.checker is not None:
            self.checker.crashed(node)

    def restart(self, node: str, hard_state: HardState | None = None,
                entries: Sequence[Entry] | None = None) -> RaftCore:
        """Start a new core for `node` from its storage alone, under a new session; the
        storage is first overwritten with `hard_state` and `entries` when they are given."""
        host = self.hosts[node]
        if hard_state is not None or entries is not None:
            saved_state, saved_entries = host.storage.load()
            host.storage = MemoryStorage()
            host.storage.save(hard_state or saved_state,
                              saved_entries if entries is None else entries)
        return host.restart(self._rng(node, host.incarnation + 1))

    # ---- driving ------------------------------------------------------------------

    def flush(self, *nodes: str) -> list[Message]:
        """Run the Ready protocol on `nodes` (default: all running); queue and return the
        messages they send."""
        out: list[Message] = []
        for i in nodes or self.ids:
            if self.hosts[i].up:
                out += self.hosts[i].flush()
                if self.checker is not None:
                    self.checker.observe(self.hosts[i])
        self.in_flight += out
        self.sent += out
        return out

    def tick(self, *nodes: str, times: int = 1) -> None:
        """Tick `nodes` (default: all running) `times` times, flushing after each tick."""
        for _ in range(times):
            for i in nodes or self.ids:
                if self.hosts[i].up:
                    self.hosts[i].live().tick()
                    self.flush(i)

    def run(self, ticks: int, *nodes: str) -> None:
        """`ticks` times: tick `nodes` (default: all running) once, then stabilize."""
        for _ in range(ticks):
            self.tick(*nodes)
            self.stabilize()

    def propose(self, node: str, data: bytes) -> int:
        """Propose `data` (JSON text) at `node`; return its seq in the node's session."""
        seq = self.hosts[node].live().propose(data)
        self.flush(node)
        return seq

    def step(self, m: Message) -> None:
        """Hand `m` to its destination at once, past every filter, and flush it."""
        self.hosts[m.dst].live().step(m)
        self.flush(m.dst)

    def take(self, kind: MsgType | None = None, src: str | None = None,
             dst: str | None = None) -> list[Message]:
        """Remove and return the queued messages that match."""
        def hit(m: Message) -> bool:
            return ((kind is None or m.type is kind) and (src is None or m.src == src)
                    and (dst is None or m.dst == dst))

        taken = [m for m in self.in_flight if hit(m)]
        self.in_flight = [m for m in self.in_flight if not hit(m)]
        return taken

    def deliver(self, where: Callable[[Message], bool] | None = None) -> int:
        """Deliver the queued messages (those `where` accepts) once, in order; what they
        cause is queued for the next call. Return how many arrived."""
        batch = [m for m in self.in_flight if where is None or where(m)]
        self.in_flight = [m for m in self.in_flight if where is not None and not where(m)]
        arrived = 0
        for m in batch:
            if self._lost(m):
                continue
            self.step(m)
            arrived += 1
        return arrived

    def stabilize(self, max_rounds: int = 1000) -> None:
        """Flush every node, then deliver until no message is left in flight."""
        self.flush()
        for _ in range(max_rounds):
            if not self.in_flight:
                return
            self.deliver()
        raise AssertionError(f"still {len(self.in_flight)} messages in flight after "
                             f"{max_rounds} rounds")

    def elect(self, node: str) -> None:
        """Tick `node` alone until it campaigns, then stabilize: it must win."""
        core = self[node]
        for _ in range(2 * core.cfg.election_ticks[1] + 1):
            if core.role is not Role.FOLLOWER:
                break
            self.tick(node)
        self.stabilize()
        if self[node].role is not Role.LEADER:
            raise AssertionError(f"{node} did not win: {self[node].role.value} in term "
                                 f"{self[node].term}")

    # ---- faults -------------------------------------------------------------------

    def drop(self, src: str, dst: str, rate: float = 1.0) -> None:
        """Lose messages from `src` to `dst` with probability `rate`."""
        self._links[(src, dst)] = rate

    def cut(self, a: str, b: str) -> None:
        """Lose every message between `a` and `b`, both ways."""
        self.drop(a, b)
        self.drop(b, a)

    def isolate(self, node: str) -> None:
        """Cut `node` off from every other node."""
        for other in self.ids:
            if other != node:
                self.cut(node, other)

    def ignore(self, kind: MsgType) -> None:
        """Lose every message of type `kind`."""
        self._ignored[kind] = True

    def recover(self) -> None:
        """Undo every drop, cut, isolation and ignore."""
        self._links = {}
        self._ignored = {}

    def _lost(self, m: Message) -> bool:
        if m.type in self._ignored or m.dst not in self.hosts or not self.hosts[m.dst].up:
            return True
        rate = self._links.get((m.src, m.dst), 0.0)
        return rate > 0 and self._loss.random() < rate

    def _rng(self, node: str, incarnation: int) -> random.Random:
        return random.Random(f"{self.seed}/{node}/{incarnation}")
