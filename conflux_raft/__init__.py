"""conflux_raft: a Raft library with a core that does no I/O, over an in-process hub or
Redis Streams."""

from ._codec import decode, encode
from ._core import CoreConfig, RaftCore
from ._errors import (
    ClosedError,
    ClusterFull,
    ConfigError,
    ConfluxRaftError,
    MalformedMessage,
    Overloaded,
    ProposalTimeout,
    RemoteError,
)
from ._storage import MemoryStorage, Storage
from ._types import Entry, EntryKind, HardState, Message, MsgType, Ready, Role

__all__ = [
    "ClosedError",
    "ClusterFull",
    "ConfigError",
    "ConfluxRaftError",
    "CoreConfig",
    "Entry",
    "EntryKind",
    "HardState",
    "MalformedMessage",
    "MemoryStorage",
    "Message",
    "MsgType",
    "Overloaded",
    "ProposalTimeout",
    "RaftCore",
    "Ready",
    "RemoteError",
    "Role",
    "Storage",
    "decode",
    "encode",
]
