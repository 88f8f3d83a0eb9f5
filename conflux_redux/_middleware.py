"""Middleware for Conflux stores: an `apply_middleware` whose middleware API also has
`get_provisional_state` and `perform`, and the methods middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._actions import PERFORM

Dispatch = Callable[[Any], Any]
Middleware = Callable[[dict[str, Any]], Callable[[Dispatch], Dispatch]]
StoreCreator = Callable[..., Any]

_API_KEYS = ("get_state", "get_provisional_state", "perform", "subscribe", "node")


def apply_middleware(*middlewares: Middleware) -> Callable[[StoreCreator], StoreCreator]:
    """pydux's `apply_middleware`, but each middleware gets an API with `get_state`,
    `dispatch` (through the whole chain), and, on a Conflux store, also
    `get_provisional_state`, `perform`, `subscribe` and `node`.

    Compose it outside the enhancer::

        create_store(reducer, enhancer=compose(apply_middleware(mw), conflux_enhancer(cfg)))
    """
    for mw in middlewares:
        if not callable(mw):
            raise TypeError(f"a middleware must be callable, not {type(mw).__name__}")

    def enhancer(create_store: StoreCreator) -> StoreCreator:
        def create(reducer: Callable[[Any, Any], Any], initial_state: Any = None) -> Any:
            store = create_store(reducer, initial_state)
            base: Dispatch = store["dispatch"]
            chain_head: list[Dispatch] = [base]

            def dispatch(action: Any) -> Any:
                return chain_head[0](action)

            api: dict[str, Any] = {"dispatch": dispatch}
            for key in _API_KEYS:
                if key in store:
                    api[key] = store[key]
            wrapped = base
            for wrap in reversed([mw(api) for mw in middlewares]):
                wrapped = wrap(wrapped)
            chain_head[0] = wrapped
            out = type(store)(store)
            out["dispatch"] = wrapped
            return out

        return create

    return enhancer


def methods_middleware(api: dict[str, Any]) -> Callable[[Dispatch], Dispatch]:
    """Turns a dispatched ``{"type": PERFORM, "name": ..., "args": [...]}`` action into
    ``perform(name, args, timeout)``. A Conflux store's own dispatch already does this;
    place this middleware in a chain (with conflux_redux.apply_middleware) to perform
    before the middleware that follow it see the action."""
    perform = api["perform"]

    def wrap(next_: Dispatch) -> Dispatch:
        def dispatch(action: Any) -> Any:
            if isinstance(action, dict) and action.get("type") == PERFORM:
                args = action.get("args", ())
                if not isinstance(args, (list, tuple)):
                    raise TypeError(f'a {PERFORM} action\'s "args" must be a list')
                return perform(action.get("name"), args, action.get("timeout"))
            return next_(action)

        return dispatch

    return wrap
