"""The one error tree of conflux_raft (and of conflux_redux, which re-exports it)."""

from __future__ import annotations


class ConfluxRaftError(Exception):
    """Root of every error this library raises."""


class ConfigError(ConfluxRaftError, ValueError):
    """An option is missing, of the wrong type or out of range; the message names it."""


class MalformedMessage(ConfluxRaftError, ValueError):
    """Bytes from the channel that do not decode to a valid, authentic message."""


class ProposalTimeout(ConfluxRaftError, TimeoutError):
    """A proposal or rpc was not answered in time; a proposal may still commit later."""


class ClosedError(ConfluxRaftError, RuntimeError):
    """The node is closed: nothing more can be proposed, pending futures are rejected."""


class Overloaded(ConfluxRaftError, RuntimeError):
    """Too many proposals of this node are in flight; retry once some have committed."""


class ClusterFull(ConfluxRaftError, RuntimeError):
    """This node's id would make the cluster larger than its configured size."""


class CorruptStorage(ConfluxRaftError, ValueError):
    """A durable store holds a damaged record that is not a torn tail: it refuses to start
    rather than drop what may be committed. The message names the file and offset."""


class Unreachable(ConfluxRaftError, ConnectionError):
    """A tool found no Redis at the URL it was given; the message says where (never the
    password) and why."""


class EntryUnavailable(ConfluxRaftError, LookupError):
    """A storage was asked for an index it does not hold (compacted, or never written)."""


class RemoteError(ConfluxRaftError):
    """An rpc on the leader failed with an exception that could not be rebuilt here."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
