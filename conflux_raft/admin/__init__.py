"""Tools to see a cluster from outside: the status its nodes publish to Redis, and the
`conflux` command (status, watch, log, dashboard). Imports no node internals: it reads
only what the nodes publish (see ARCHITECTURE.md)."""

from .._errors import Unreachable
from ._cli import main, render
from ._status import ClusterView, cluster_view, read_cluster

__all__ = ["ClusterView", "Unreachable", "cluster_view", "main", "read_cluster", "render"]
