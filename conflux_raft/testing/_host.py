"""One simulated machine: a core, the MemoryStorage it persists to, and its state machine
(the list of entries applied), which it snapshots every `snapshot_every` entries."""

from __future__ import annotations

import random
from dataclasses import replace

import orjson

from ..core import CoreConfig, Entry, EntryKind, Message, RaftCore, ReadState, Snapshot
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
        "_prefix",
        "_reads",
        "acked",
        "applied",
        "config",
        "core",
        "core_class",
        "id",
        "incarnation",
        "keep",
        "reads_done",
        "snapshot_every",
        "storage",
    )

    def __init__(
        self, config: CoreConfig, rng: random.Random, core_class: type[RaftCore] = RaftCore,
        snapshot_every: int = 0, keep: int = 0,
    ) -> None:
        self.id = config.id
        self.snapshot_every = snapshot_every  # 0: never; else entries between snapshots
        self.keep = keep  # entries kept in the log behind a snapshot
        self._prefix: tuple[Snapshot | None, list[Entry]] = (None, [])
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
            if rd.snapshot is not None:
                self.storage.save_snapshot(rd.snapshot)
            self.storage.save(rd.hard_state, rd.entries)
        self.crash()

    def restart(self, rng: random.Random) -> RaftCore:
        """Start a new core from the persisted hard state and log only."""
        self.incarnation += 1
        self.config = replace(self.config, session=self.session)
        hard_state, entries = self.storage.load()
        snapshot = self.storage.snapshot()
        # The state machine is rebuilt from the snapshot, then the log.
        self.applied = decode_entries(snapshot.data) if snapshot is not None else []
        self._reads = []
        self.core = self.core_class(self.config, rng, hard_state, entries, snapshot)
        return self.core

    def full_log(self) -> list[Entry]:
        """The core's log with its compacted prefix filled in from its snapshot."""
        core = self.live()
        offset = core.log.offset
        if not offset:
            return core.log.entries_from(1)
        snap = core.snapshot
        if self._prefix[0] is not snap:
            assert snap is not None
            self._prefix = (snap, decode_entries(snap.data))
        return self._prefix[1][:offset] + core.log.entries_from(1)

    def _take_snapshot(self, core: RaftCore) -> None:
        index = len(self.applied)
        last = core.snapshot.index if core.snapshot is not None else 0
        if not self.snapshot_every or index - last < self.snapshot_every:
            return
        term = core.log.term_at(index)
        assert term is not None
        snap = Snapshot(index, term, core.voters.voters, encode_entries(self.applied),
                        core.sessions_at(index))
        self.storage.save_snapshot(snap)
        core.compact(snap, self.keep)
        self.storage.compact(core.log.offset)

    def flush(self) -> list[Message]:
        """Handle every pending batch; return the messages to send."""
        core = self.live()
        out: list[Message] = []
        for _ in range(_MAX_BATCHES):
            if not core.has_ready():
                return out
            rd = core.ready()
            if rd.snapshot is not None:  # from the leader: persist it, then restore
                self.storage.save_snapshot(rd.snapshot)
                self.applied = decode_entries(rd.snapshot.data)
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
            if rd.committed:
                self._take_snapshot(core)
            self._reads.extend(rd.reads)
            if self._reads:
                applied = len(self.applied)
                self.reads_done.extend(r for r in self._reads if r.index <= applied)
                self._reads = [r for r in self._reads if r.index > applied]
        raise ProtocolViolation(f"node {self.id}: has_ready() still true after {_MAX_BATCHES} "
                                "batches")


def encode_entries(entries: list[Entry]) -> bytes:
    """The simulated state machine's snapshot: every entry it applied."""
    return orjson.dumps([[e.term, e.index, int(e.kind), e.data.decode(), e.client, e.seq]
                         for e in entries])


def decode_entries(data: bytes) -> list[Entry]:
    return [Entry(t, i, d.encode(), EntryKind(k), c, s) for t, i, k, d, c, s in orjson.loads(data)]
