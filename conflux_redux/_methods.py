"""Methods, the seed's action creators: `perform(name, args)` runs `methods[name]` on the
leader, on its loop thread, against its provisional state, and the action it returns is
appended to the leader's log in the same step (`conflux_raft.Append`): the check a method
makes and the append of its action are one atomic step."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from conflux_raft import Append

from ._actions import PERFORM, check_action, check_timeout

RPC_NAME = "conflux.perform"
"""The name of the rpc a store registers on its RaftNode."""

Method = Callable[..., Any]


class Methods:
    """The leader's side of `perform`."""

    def __init__(self, methods: Mapping[str, Method],
                 provisional_state: Callable[[], Any]) -> None:
        self._methods = dict(methods)
        self._provisional_state = provisional_state

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def serve(self, name: Any, args: Any) -> Append | None:
        """The rpc, on the leader's loop thread."""
        if not isinstance(name, str) or not isinstance(args, list):
            raise TypeError(f"{RPC_NAME} takes a method name and a list of arguments")
        method = self._methods.get(name)
        if method is None:
            raise KeyError(f"no method named {name!r}")
        out = method(self._provisional_state(), *args)
        if out is None:
            return None
        if isinstance(out, BaseException):
            raise out
        check_action(out)
        if out.get("type") == PERFORM:
            raise ValueError(f"method {name!r} returned a {PERFORM} action; return the "
                             "action to replicate instead")
        return Append(out)


def check_perform_args(name: Any, args: Any, timeout: Any) -> list[Any]:
    """Raise TypeError/ValueError for arguments `perform` cannot send; the args as a list."""
    if not isinstance(name, str):
        raise TypeError(f"a method name must be a string, not {type(name).__name__}")
    if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Iterable):
        raise TypeError("args must be a list or tuple of arguments")
    arg_list = list(args)
    try:
        orjson.dumps(arg_list)
    except TypeError as exc:
        raise TypeError(f"the args cannot be encoded by orjson: {exc}") from exc
    check_timeout(timeout)
    return arg_list
