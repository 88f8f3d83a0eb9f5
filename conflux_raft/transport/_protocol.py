"""What a node needs from a channel: move opaque bytes between the nodes of a namespace
(`Transport`), and learn the voters of a cluster given by its size (`Discovery`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol


class Transport(Protocol):
    """A channel endpoint for one node. Implementations: `MemoryTransport`, `RedisTransport`.

    Raft tolerates lost, duplicated and reordered messages, so a transport may drop
    (and count) whatever it cannot deliver; it never raises for network trouble.
    """

    def start(self, deliver: Callable[[bytes], None]) -> None:
        """Begin receiving: `deliver(raw)` is called, from a background thread, for each
        message that arrives in this node's inbox. `deliver` is quick and never raises."""
        ...

    def send(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Send each `(destination node id, payload)`. Returns at once; never raises for
        network trouble (the messages are dropped and counted)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters: at least "sent", "received", "dropped", "reconnects"."""
        ...

    def health(self) -> str | None:
        """None while the channel works; else one line saying what is wrong, and since
        when (for error messages)."""
        ...

    def close(self) -> None:
        """Stop receiving and release connections. Idempotent."""
        ...


class Discovery(Protocol):
    """Registration in a namespace. Implementations: `MemoryDiscovery`, `RedisDiscovery`."""

    def join(self, cluster_size: int, timeout: float | None) -> list[str]:
        """Register this node in the namespace and return the voters: the first
        `cluster_size` ids ever registered there, in order, once that many are known
        (waiting up to `timeout`). Raise ClusterFull if this id is not among them."""
        ...

    def restore(self, voters: Sequence[str], timeout: float) -> list[str]:
        """A node that keeps its voters durably puts them back in a namespace that lost
        its list (Redis restarted empty, or flushed); returns the list as it stands."""
        ...

    def close(self) -> None:
        """Wake a waiting join (it raises ClosedError) and release connections."""
        ...
