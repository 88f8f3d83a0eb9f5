"""Rpc bookkeeping: running a function on the leader for one caller, and the calls of
this node still in flight.

An rpc runs on the leader's loop thread, once the leader has confirmed with a quorum
that it still leads after the call reached it, and has applied that read index (so it
sees every entry committed before the call began). It returns a value (sent to the
caller alone), raises or returns an exception (the caller's future fails with it), or
returns `Append(data)`: the leader appends `data` to its log at once, in its current
term. The caller's future resolves once the leader's log as it stood after the rpc ran
is committed and applied on the caller's node: a value never reflects an entry that a
later leader could still drop, and a check-then-act's entry is applied when it resolves.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .._errors import RemoteError
from ._commands import to_json


@dataclass(frozen=True, slots=True)
class Append:
    """Returned by an rpc function: append `data` (orjson-encodable) to the leader's log
    now, in this term. If the leader loses the entry it is not retried (the decision was
    taken against a log that no longer holds): the caller's future fails with
    ProposalTimeout."""

    data: Any


@dataclass(slots=True)
class OutCall:
    """One rpc of this node in flight; `sent_to` is None until it is sent to a leader,
    `sent_at` when it last was (a call unanswered for long is sent again)."""

    future: Future[Any]
    name: str
    args: list[Any]
    sent_to: str | None = None
    sent_at: float = 0.0


@dataclass(slots=True)
class Parked:
    """An rpc that reached the leader and waits for its read index to be confirmed and
    applied. `asker` is the calling node (this one for a local call)."""

    name: str
    args: list[Any]
    asker: str
    confirmed: bool = False


def run_rpc(functions: Mapping[str, Callable[..., Any]], name: str,
            args: list[Any]) -> tuple[bool, Any]:
    """(True, result) or (False, exception). A result is orjson-encodable or an Append."""
    fn = functions.get(name)
    if fn is None:
        return False, KeyError(f"no rpc named {name!r}")
    try:
        result = fn(*args)
        if isinstance(result, BaseException):
            raise result
        to_json(result.data if isinstance(result, Append) else result)
        return True, result
    except Exception as exc:
        return False, exc


def error_payload(exc: BaseException) -> list[str]:
    """An exception as it travels: [class name, message]."""
    message = exc.args[0] if len(exc.args) == 1 else str(exc)
    return [type(exc).__name__, str(message)]


def rebuild(err: Any) -> BaseException:
    """An exception of the same builtin class as the remote one, else RemoteError."""
    if not (isinstance(err, list) and len(err) == 2):
        return RemoteError("Error", repr(err))
    name, message = str(err[0]), str(err[1])
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RemoteError(name, message)
