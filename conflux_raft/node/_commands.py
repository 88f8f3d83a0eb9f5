"""What the threads of a node hand each other: commands for the loop thread's inbox and
work for the apply thread (frozen, slotted values, matched by type), the encoding their
data travels in, and how a future that several threads race for is settled."""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from ..core import Entry, Message, Snapshot


def settle(fut: Future[Any], result: Any = None, exc: BaseException | None = None) -> bool:
    """Resolve `fut` unless it already is (a timeout or close may have won the race);
    return whether this call settled it."""
    if fut.done():
        return False
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except Exception:  # InvalidStateError: settled concurrently
        return False
    return True


def to_json(value: Any) -> bytes:
    """orjson's encoding of `value` (TypeError if it has none; ValueError for NaN and
    infinities, which orjson would write as null), in a bytes object of its own size:
    the one orjson returns keeps a 4 KiB buffer, and log entries live long."""
    raw = orjson.dumps(value)
    if b"null" in raw:  # a None, or a float that JSON cannot hold
        _check_finite(value)
    return memoryview(raw).tobytes()


def _check_finite(value: Any) -> None:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot travel as JSON (it would arrive as null)")
    elif isinstance(value, dict):
        for v in value.values():
            _check_finite(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_finite(v)

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


@dataclass(frozen=True, slots=True)
class Read:
    """`read()`: the future gets a read index once this node has applied it."""

    future: Future[int]
    deadline: float | None


@dataclass(frozen=True, slots=True)
class RunRpc:
    """The leader confirmed its leadership after rpc `rid` reached it, and applied the
    read index: the rpc may run now."""

    rid: str


@dataclass(frozen=True, slots=True)
class Snapshotted:
    """A snapshot of this node's applied state is durable: the log may be compacted."""

    snapshot: Snapshot


Command = Receive | Propose | CallRpc | Read | RunRpc | Snapshotted

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


@dataclass(frozen=True, slots=True)
class Restored:
    """A snapshot to restore the application from (at start, or received from the
    leader); `done` are this node's appends that it holds, settled with its index."""

    snapshot: Snapshot
    done: tuple[Future[int], ...] = ()


Work = LeaderChanged | Appended | Committed | Restored
