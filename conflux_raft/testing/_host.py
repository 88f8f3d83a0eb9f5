"""One simulated machine: a core, the MemoryStorage it persists to, and its state machine."""

from __future__ import annotations

import random
from dataclasses import replace

from ..core import CoreConfig, Entry, Message, RaftCore, ReadState
from ..storage import MemoryStorage

_MAX_BATCHES = 100


class ProtocolViolation(AssertionError):
    """The core broke the Ready protocol (a batch loop that never ends, a gap in applies)."""


class Host:
    """Drives one core through the Ready protocol: persist, send, apply, advance.

    A crash drops the core and keeps the storage; a restart builds a NEW core from
    what the storage holds, under a fresh session id (`<id>.<incarnation>`).
    """

    __slots__ = (
        "_reads",
        "acked",
        "applied",
        "config",
        "core",
        "core_class",
        "id",
        "incarnation",
        "reads_done",
        "storage",
    )

    def __init__(
        self, config: CoreConfig, rng: random.Random, core_class: type[RaftCore] = RaftCore
    ) -> None:
        self.id = config.id
        self.core_class = core_class
        self.config = config
        self.storage = MemoryStorage()
        self.incarnation = 0
        self.applied: list[Entry] = []
        self.acked: list[tuple[str, int]] = []  # own proposals seen committed, in order
        self._reads: list[ReadState] = []  # read indexes handed over, not yet applied
        self.reads_done: list[ReadState] = []  # reads this node may answer: index applied
        self.core: RaftCore | None = None
        self.restart(rng)

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def session(self) -> str:
        return f"{self.id}.{self.incarnation}"

    def live(self) -> RaftCore:
        """The running core; a ProtocolViolation if the host is down."""
        if self.core is None:
            raise ProtocolViolation(f"node {self.id} is down")
        return self.core

    def crash(self) -> None:
        self.core = None

    def tear(self) -> None:
        """Crash in the middle of a batch: persisted, but nothing sent or applied."""
        core = self.live()
        if core.has_ready():
            rd = core.ready()
            self.storage.save(rd.hard_state, rd.entries)
        self.crash()

    def restart(self, rng: random.Random) -> RaftCore:
        """Start a new core from the persisted hard state and log only."""
        self.incarnation += 1
        self.config = replace(self.config, session=self.session)
        hard_state, entries = self.storage.load()
        self.applied = []  # the state machine is rebuilt from the log
        self._reads = []
        self.core = self.core_class(self.config, rng, hard_state, entries)
        return self.core

    def flush(self) -> list[Message]:
        """Handle every pending batch; return the messages to send."""
        core = self.live()
        out: list[Message] = []
        for _ in range(_MAX_BATCHES):
            if not core.has_ready():
                return out
            rd = core.ready()
            self.storage.save(rd.hard_state, rd.entries)
            out.extend(rd.messages)
            for e in rd.committed:
                if e.index != len(self.applied) + 1:
                    raise ProtocolViolation(
                        f"node {self.id} asked to apply index {e.index} after "
                        f"{len(self.applied)}"
                    )
                self.applied.append(e)
                if e.client == self.config.session:
                    self.acked.append((e.client, e.seq))
            core.advance(rd)
            self._reads.extend(rd.reads)
            if self._reads:
                applied = len(self.applied)
                self.reads_done.extend(r for r in self._reads if r.index <= applied)
                self._reads = [r for r in self._reads if r.index > applied]
        raise ProtocolViolation(f"node {self.id}: has_ready() still true after {_MAX_BATCHES} "
                                "batches")
