"""What the threads of a node hand each other: commands for the loop thread's inbox, and
work for the apply thread. Frozen, slotted values, matched by type."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from ..core import Entry, Message


def encoded(value: Any) -> bytes:
    """orjson's encoding of `value` (TypeError if it has none), in a bytes object of its
    own size: the one orjson returns keeps a 4 KiB buffer, and log entries live long."""
    return memoryview(orjson.dumps(value)).tobytes()

# ---- the loop thread's inbox ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receive:
    """A decoded message from the transport."""

    message: Message


@dataclass(frozen=True, slots=True)
class Propose:
    """`append()`: data for the log; the future gets its index once applied here."""

    data: bytes
    future: Future[int]
    deadline: float | None


@dataclass(frozen=True, slots=True)
class CallRpc:
    """`dispatch_on_leader()`: run rpc `name` on the leader."""

    name: str
    args: list[Any]
    future: Future[Any]
    deadline: float | None


Command = Receive | Propose | CallRpc

# ---- the apply thread's queue -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaderChanged:
    """This node learnt of a new leader."""

    leader: str
    term: int


@dataclass(frozen=True, slots=True)
class Appended:
    """Entries entered this node's log (persisted)."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Committed:
    """Entries to apply, in order; `done` pairs this node's own with their futures."""

    entries: tuple[Entry, ...]
    done: tuple[tuple[Entry, Future[int]], ...]


Work = LeaderChanged | Appended | Committed
