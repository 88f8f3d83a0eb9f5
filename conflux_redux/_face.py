"""The store face: pydux's StoreDict with Conflux's keys, each also a method."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

from pydux.create_store import StoreDict

from conflux_raft import RaftNode

Reducer = Callable[[Any, Any], Any]
Listener = Callable[[], Any]


class ConfluxStore(StoreDict):  # type: ignore[misc]
    """pydux's StoreDict with Conflux's keys: every key is also a method."""

    def dispatch(self, action: Any, timeout: float | None = None) -> Any:
        """`timeout` fails the future with a TimeoutError after that many seconds (the
        action may still commit). Middleware that does not pass it on never sees it."""
        if timeout is None:
            return self["dispatch"](action)
        return self["dispatch"](action, timeout)

    def get_state(self) -> Any:
        return self["get_state"]()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        unsubscribe: Callable[[], None] = self["subscribe"](listener)
        return unsubscribe

    def replace_reducer(self, next_reducer: Reducer) -> None:
        self["replace_reducer"](next_reducer)

    def get_provisional_state(self) -> Any:
        return self["get_provisional_state"]()

    def perform(
        self, name: str, args: Iterable[Any] = (), timeout: float | None = None
    ) -> Future[Any]:
        fut: Future[Any] = self["perform"](name, args, timeout)
        return fut

    def read(self, timeout: float | None = None) -> Future[Any]:
        """The committed state, linearizable: once the future resolves, it holds every
        action committed anywhere before the call began."""
        fut: Future[Any] = self["read"](timeout)
        return fut

    # ---- asyncio: the same calls, awaited (cancelling stops the wait, not the call) ---

    async def adispatch(self, action: Any, timeout: float | None = None) -> Any:
        """`dispatch`, awaited: the action as every node reduced it."""
        return await asyncio.wrap_future(self.dispatch(action, timeout))

    async def aperform(self, name: str, args: Iterable[Any] = (),
                       timeout: float | None = None) -> Any:
        """`perform`, awaited."""
        return await asyncio.wrap_future(self.perform(name, args, timeout))

    async def aread(self, timeout: float | None = None) -> Any:
        """`read`, awaited: the committed state, linearizable."""
        return await asyncio.wrap_future(self.read(timeout))

    def close(self, timeout: float | None = None) -> None:
        self["close"](timeout)

    @property
    def node(self) -> RaftNode:
        node: RaftNode = self["node"]
        return node

    def __enter__(self) -> ConfluxStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
