"""The Raft state machine: no I/O, no clock, no threads (see ARCHITECTURE.md)."""

from ._config import CoreConfig
from ._log import RaftLog
from ._progress import Inflights, Progress, ProgressState
from ._quorum import MajorityConfig, VoteResult
from ._raft import RaftCore
from ._sessions import ProposalQueue, SessionTable, owner_of
from ._types import (
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

__all__ = [
    "CoreConfig",
    "Entry",
    "EntryKind",
    "HardState",
    "Inflights",
    "MajorityConfig",
    "Message",
    "MsgType",
    "Progress",
    "ProgressState",
    "ProposalQueue",
    "RaftCore",
    "RaftLog",
    "ReadState",
    "Ready",
    "Role",
    "SessionTable",
    "Snapshot",
    "VoteResult",
    "owner_of",
]
