"""conflux_raft: a Raft library with a core that does no I/O, over an in-process hub or
Redis Streams. See ARCHITECTURE.md for the packages: `core`, `storage`, `transport`,
`node` and `testing`."""

from ._errors import (
    ClosedError,
    ClusterFull,
    ConfigError,
    ConfluxRaftError,
    EntryUnavailable,
    MalformedMessage,
    Overloaded,
    ProposalTimeout,
    RemoteError,
)
from .core import CoreConfig, Entry, EntryKind, HardState, Message, MsgType, RaftCore, Ready, Role
from .node import Append, LogEntry, NodeOptions, RaftNode, parse_options, settle
from .storage import FileStorage, MemoryStorage, Storage
from .transport import (
    Discovery,
    MemoryDiscovery,
    MemoryHub,
    MemoryTransport,
    RedisDiscovery,
    RedisTransport,
    Transport,
    decode,
    encode,
)

__all__ = [
    "Append",
    "ClosedError",
    "ClusterFull",
    "ConfigError",
    "ConfluxRaftError",
    "CoreConfig",
    "Discovery",
    "Entry",
    "EntryKind",
    "EntryUnavailable",
    "FileStorage",
    "HardState",
    "LogEntry",
    "MalformedMessage",
    "MemoryDiscovery",
    "MemoryHub",
    "MemoryStorage",
    "MemoryTransport",
    "Message",
    "MsgType",
    "NodeOptions",
    "Overloaded",
    "ProposalTimeout",
    "RaftCore",
    "RaftNode",
    "Ready",
    "RedisDiscovery",
    "RedisTransport",
    "RemoteError",
    "Role",
    "Storage",
    "Transport",
    "decode",
    "encode",
    "parse_options",
    "settle",
]
