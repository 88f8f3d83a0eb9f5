"""Moving messages between nodes: the codec, the in-process hub, Redis Streams, and
discovery of the voters (see ARCHITECTURE.md)."""

from ._codec import VERSION, decode, encode, encode_all
from ._discovery import MemoryDiscovery, RedisDiscovery, members_key
from ._memory import MemoryHub, MemoryTransport
from ._protocol import Discovery, Transport
from ._redis import RedisTransport, connect, describe, inbox_key, reporters_key, status_key

__all__ = [
    "VERSION",
    "Discovery",
    "MemoryDiscovery",
    "MemoryHub",
    "MemoryTransport",
    "RedisDiscovery",
    "RedisTransport",
    "Transport",
    "connect",
    "decode",
    "describe",
    "encode",
    "encode_all",
    "inbox_key",
    "members_key",
    "reporters_key",
    "status_key",
]
