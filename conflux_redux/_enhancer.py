"""`conflux_enhancer(cfg)`: the pydux store enhancer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._config import ConfluxConfig, to_config
from ._face import ConfluxStore
from ._replica import make_store

StoreCreator = Callable[..., Any]


def conflux_enhancer(
    cfg: ConfluxConfig | Mapping[str, Any],
) -> Callable[[StoreCreator], Callable[..., ConfluxStore]]:
    """A pydux enhancer that replicates the store through Raft.

    ``create_store(reducer, enhancer=conflux_enhancer(cfg))`` returns a ConfluxStore.
    `cfg` is checked at once: an unknown key or a bad value raises ConfigError (a
    ValueError) naming it; a `cfg` that is neither a dict nor a ConfluxConfig raises
    TypeError. Each store built with it starts one RaftNode.
    """
    config = to_config(cfg)

    def enhancer(create_store: StoreCreator) -> Callable[..., ConfluxStore]:
        if not callable(create_store):
            raise TypeError("conflux_enhancer(cfg) must be given create_store")

        def create(reducer: Callable[[Any, Any], Any], initial_state: Any = None) -> ConfluxStore:
            return make_store(config, create_store, reducer, initial_state)

        return create

    return enhancer
