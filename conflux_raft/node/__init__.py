"""The runtime: RaftNode and the threads that drive a core (see ARCHITECTURE.md)."""

from ._apply import LogEntry
from ._commands import settle, to_json
from ._node import RaftNode
from ._options import NodeOptions, parse_options
from ._rpc import Append

__all__ = ["Append", "LogEntry", "NodeOptions", "RaftNode", "parse_options", "settle", "to_json"]
