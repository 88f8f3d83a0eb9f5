"""conflux_redux: Redux (pydux) stores replicated with Raft.

    from pydux import create_store
    from conflux_redux import conflux_enhancer

    store = create_store(reducer, enhancer=conflux_enhancer({"id": "a", "cluster_size": 3}))
    store.dispatch({"type": "add", "item": "foo"}).result(5)   # committed and applied here
    store.perform("append", ["foo"]).result(5)                 # a method, run on the leader
"""

from conflux_raft import (
    ClosedError,
    ClusterFull,
    ConfigError,
    Overloaded,
    ProposalTimeout,
    RemoteError,
)
from conflux_raft import ConfluxRaftError as ConfluxError

from ._actions import PERFORM, check_action, perform_action
from ._config import ConfluxConfig
from ._enhancer import conflux_enhancer
from ._face import ConfluxStore
from ._middleware import apply_middleware, methods_middleware

__all__ = [
    "PERFORM",
    "ClosedError",
    "ClusterFull",
    "ConfigError",
    "ConfluxConfig",
    "ConfluxError",
    "ConfluxStore",
    "Overloaded",
    "ProposalTimeout",
    "RemoteError",
    "apply_middleware",
    "check_action",
    "conflux_enhancer",
    "methods_middleware",
    "perform_action",
]
