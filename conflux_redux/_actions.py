"""Actions: what a Conflux store accepts, and the action that performs a method."""

from __future__ import annotations

from typing import Any

from conflux_raft import to_json

PERFORM = "conflux/perform"
"""The `type` of an action that `dispatch` turns into `perform(name, args, timeout)`:
``{"type": PERFORM, "name": "append", "args": ["foo"]}`` (see `perform_action`)."""


def check_action(action: Any) -> None:
    """Raise TypeError/ValueError unless `action` is a dict with a non-None `type` that
    orjson can encode."""
    check_shape(action)
    try:
        to_json(action)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise unencodable(exc) from exc


def check_shape(action: Any) -> None:
    """Raise TypeError/ValueError unless `action` is a dict with a non-None `type`."""
    if not isinstance(action, dict):
        raise TypeError(f"an action must be a dict, not {type(action).__name__}")
    if action.get("type") is None:
        raise ValueError('an action must have a non-None "type"')


def check_timeout(timeout: Any) -> None:
    """Raise ValueError unless `timeout` is None or a number of seconds >= 0."""
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0
    ):
        raise ValueError("timeout must be None or a number of seconds >= 0")


def unencodable(exc: TypeError) -> TypeError:
    return TypeError(f"the action cannot be encoded by orjson: {exc}")


def perform_action(name: str, *args: Any, timeout: float | None = None) -> dict[str, Any]:
    """The action that, dispatched through a Conflux store, performs method `name`."""
    action: dict[str, Any] = {"type": PERFORM, "name": name, "args": list(args)}
    if timeout is not None:
        action["timeout"] = timeout
    return action
