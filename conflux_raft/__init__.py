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
from ._filestore import FileStorage
from ._memory import MemoryHub, MemoryTransport
from ._node import LogEntry, RaftNode
from ._storage import MemoryStorage, Storage
from ._transport import Transport
from ._types import Entry, EntryKind, HardState, Message, MsgType, Ready, Role

__all__ = [
    "ClosedError",
    "ClusterFull",
    "ConfigError",
    "ConfluxRaftError",
    "CoreConfig",
    "Entry",
    "EntryKind",
    "FileStorage",
    "HardState",
    "LogEntry",
    "MalformedMessage",
    "MemoryHub",
    "MemoryStorage",
    "MemoryTransport",
    "Message",
    "MsgType",
    "Overloaded",
    "ProposalTimeout",
    "RaftCore",
    "RaftNode",
    "Ready",
    "RemoteError",
    "Role",
    "Storage",
    "Transport",
    "decode",
    "encode",
]
