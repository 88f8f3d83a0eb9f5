"""Entries, messages and the batch the core hands to its driver: frozen, slotted values."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class EntryKind(enum.IntEnum):
    """What an entry carries."""

    NORMAL = 0  # user data
    NOOP = 1  # appended by every new leader
    CONFIG = 2  # a membership change (reserved)


class MsgType(enum.IntEnum):
    """Every message that crosses the channel."""

    PRE_VOTE = 1
    PRE_VOTE_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    APPEND = 5
    APPEND_RESP = 6
    PROPOSE = 7  # a follower forwards its proposals to the leader
    PROPOSE_RESP = 8  # the leader's ack, or a redirect
    READ_INDEX = 9  # a follower asks the leader for a read index (ReadIndex, §6.4)
    READ_INDEX_RESP = 10  # the leader's answer, once a quorum confirmed it still leads
    SNAPSHOT = 11  # InstallSnapshot: one chunk of the leader's snapshot
    SNAPSHOT_RESP = 12  # the follower asks for the chunk at byte `hint` next
    RPC = 20  # driver-level: run a function on the leader
    RPC_RESP = 21
    HELLO = 22  # driver-level: membership discovery


class Role(enum.Enum):
    """The role a node plays in its current term."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data` is opaque bytes (the orjson encoding of the user's value).

    `client` and `seq` identify the proposal: a leader appends seq n of a client only
    after seq n-1, and only once, so retries never duplicate an entry.
    """

    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL
    client: str = ""
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Message:
    """One message, shaped like etcd's raftpb.Message: fields unused by a type stay default.

    APPEND: index/log_term are prevLogIndex/prevLogTerm. APPEND_RESP: index is the
    match index, or the rejected prevLogIndex with hint/hint_term the conflict hint.
    (PRE_)VOTE: index/log_term describe the candidate's last entry. PROPOSE_RESP:
    hint is the highest seq the leader holds for `context` (the client session), as of
    `term`; reject means "not the leader", with the leader it knows in `payload`, or,
    with `hint_term` > 0, "your session is superseded by incarnation `hint_term`".
    APPEND carries the leader's read round in `context` (decimal digits, or ""), and its
    APPEND_RESP echoes it. READ_INDEX(_RESP): `context` names the read; `index` is the
    read index. SNAPSHOT: index/log_term are the snapshot's, `hint` the chunk's byte
    offset, `hint_term` the snapshot's size in bytes, `payload` the chunk in base64
    (with the voters and sessions in the first); SNAPSHOT_RESP: `hint` is the byte offset
    the follower wants next. Both carry and echo the read round as appends do.
    """

    type: MsgType
    src: str
    dst: str
    term: int = 0
    log_term: int = 0
    index: int = 0
    commit: int = 0
    entries: tuple[Entry, ...] = ()
    reject: bool = False
    hint: int = 0
    hint_term: int = 0
    context: str = ""
    payload: Any = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application's state as of entry `index` (of `term`), with the voters then and
    the highest seq of each client session up to it (the leader's de-duplication);
    `data` is whatever the application's snapshot function returned."""

    index: int
    term: int
    voters: tuple[str, ...]
    data: bytes
    sessions: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Ready:
    """One batch of work for the driver: persist, then send, then apply, then advance.

    `entries` overwrite the stored log from `entries[0].index` on. `snapshot` is one
    received from the leader: persist it (the stored log is then emptied: no entry of it
    follows the snapshot), and restore the application from it before applying
    `committed`, which continue from `snapshot.index + 1`.
    """

    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    messages: tuple[Message, ...] = ()
    committed: tuple[Entry, ...] = field(default=())
    reads: tuple[ReadState, ...] = ()
    snapshot: Snapshot | None = None

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.entries or self.messages or self.committed
                    or self.reads or self.snapshot)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read asked of this node with `read_index(context)` may be served once this
    node has applied `index`: every entry committed before the read was asked is at or
    below it."""

    context: str
    index: int
