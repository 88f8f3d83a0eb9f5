"""Discovery: who the voters are when a cluster is given by its size (`cluster_size`).

Kept apart from messaging: the first `cluster_size` ids to register in a namespace are
its voters, in registration order, and any later id is refused with ClusterFull. The
memory hub keeps the list in process; Redis keeps it at `conflux:{ns}:members`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
from tenacity import (
    RetryError,
    Retrying,
    retry_if_not_exception_type,
    stop_after_delay,
    stop_when_event_set,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from .._errors import ClosedError, ClusterFull, ConfigError
from ._memory import MemoryHub
from ._redis import connect, describe

__all__ = ["MemoryDiscovery", "RedisDiscovery", "members_key"]

_T = TypeVar("_T")

_POLL = 0.05  # seconds between two looks at the member list in Redis

# Append ARGV[1] to the list KEYS[1] unless present; return its 0-based position.
_JOIN_SCRIPT = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for i, id in ipairs(ids) do
  if id == ARGV[1] then return i - 1 end
end
return redis.call('RPUSH', KEYS[1], ARGV[1]) - 1
"""

# Put ARGV in the list KEYS[1] unless it exists; return the list.
_RESTORE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('RPUSH', KEYS[1], unpack(ARGV)) end
return redis.call('LRANGE', KEYS[1], 0, -1)
"""

# Errors that waiting does not cure: join reports them at once.
_REFUSED: tuple[type[Exception], ...] = tuple(
    cls
    for cls in (
        getattr(redis.exceptions, name, None)
        for name in (
            "AuthenticationError",
            "AuthenticationWrongNumberOfArgsError",
            "AuthorizationError",
            "NoPermissionError",
        )
    )
    if isinstance(cls, type) and issubclass(cls, Exception)
)


def members_key(namespace: str) -> str:
    """The list of ids registered in `namespace`."""
    return f"conflux:{{{namespace}}}:members"


class MemoryDiscovery:
    """Registration on the in-process hub of `namespace`."""

    def __init__(self, node_id: str, namespace: str = "default") -> None:
        _check_ids(node_id, namespace)
        self.node_id = node_id
        self.namespace = namespace
        self.hub = MemoryHub.get(namespace)
        self._closed = False

    def join(self, cluster_size: int, timeout: float | None) -> list[str]:
        """Register this id (an id keeps its first slot) and return the first
        `cluster_size` ids once that many are registered. Raises ClusterFull if this id
        is beyond them, builtin TimeoutError after `timeout` seconds."""
        _check_join_args(cluster_size, timeout)
        hub = self.hub
        deadline = None if timeout is None else time.monotonic() + timeout
        with hub._lock:
            if self.node_id not in hub._members:
                hub._members.append(self.node_id)
                hub._joined.notify_all()
            if hub._members.index(self.node_id) >= cluster_size:
                raise ClusterFull(_full_message(self.node_id, cluster_size, hub._members))
            while len(hub._members) < cluster_size:
                if self._closed:
                    raise ClosedError(f"discovery of {self.node_id!r} was closed while joining")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(_short_message(len(hub._members), cluster_size,
                                                      self.namespace, timeout))
                hub._joined.wait(remaining)
            return hub._members[:cluster_size]

    def restore(self, voters: Sequence[str], timeout: float) -> list[str]:
        with self.hub._lock:
            if not self.hub._members:
                self.hub._members.extend(voters)
                self.hub._joined.notify_all()
            return list(self.hub._members)

    def close(self) -> None:
        """Wake a join that waits; idempotent."""
        with self.hub._lock:
            self._closed = True
            self.hub._joined.notify_all()


class RedisDiscovery:
    """Registration in the list `conflux:{ns}:members`, appended atomically by a script."""

    def __init__(self, node_id: str, url: str, namespace: str, *,
                 socket_timeout: float = 2.0, connect_timeout: float = 1.0) -> None:
        _check_ids(node_id, namespace)
        self.node_id = node_id
        self.namespace = namespace
        self._key = members_key(namespace)
        self._client = connect(url, socket_timeout, connect_timeout)
        self._where = describe(self._client)
        self._script = self._client.register_script(_JOIN_SCRIPT)
        self._restore = self._client.register_script(_RESTORE_SCRIPT)
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"RedisDiscovery({self.node_id!r}, {self._where!r}, {self.namespace!r})"

    def join(self, cluster_size: int, timeout: float | None) -> list[str]:
        """As `MemoryDiscovery.join`; Redis being unreachable until `timeout` is a
        TimeoutError too, and refused credentials a ConfigError at once."""
        _check_join_args(cluster_size, timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        key = self._key

        def register() -> int:
            return int(self._script(keys=[key], args=[self.node_id]))

        if self._call_until(deadline, register) >= cluster_size:
            members = self._call_until(deadline, lambda: self._client.lrange(key, 0, -1))
            raise ClusterFull(_full_message(self.node_id, cluster_size, _decode_ids(members)))
        while True:
            ids = _decode_ids(self._call_until(
                deadline, lambda: self._client.lrange(key, 0, cluster_size - 1)))
            if len(ids) >= cluster_size:
                return ids
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(_short_message(len(ids), cluster_size, self.namespace,
                                                  timeout))
            if self._stop.wait(_POLL if remaining is None else min(_POLL, remaining)):
                raise ClosedError(f"{self!r} was closed while joining")

    def restore(self, voters: Sequence[str], timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        return _decode_ids(self._call_until(
            deadline, lambda: self._restore(keys=[self._key], args=list(voters))))

    def close(self) -> None:
        """Stop a join that waits and close the connection; idempotent."""
        self._stop.set()
        self._client.close()

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _call_until(self, deadline: float | None, fn: Callable[[], _T]) -> _T:
        """`fn()`, retried with backoff while Redis is unreachable, until `deadline` (then
        builtin TimeoutError) or close (then ClosedError)."""
        stop: stop_base = stop_when_event_set(self._stop)
        if deadline is not None:
            stop = stop | stop_after_delay(max(0.0, deadline - time.monotonic()))
        retrying = Retrying(
            sleep=self._sleep, stop=stop,
            wait=wait_random_exponential(multiplier=0.1, max=1.0),
            retry=retry_if_not_exception_type(_REFUSED),
        )
        try:
            return retrying(fn)
        except _REFUSED as exc:
            raise ConfigError(
                f"url: Redis at {self._where} refused this client ({type(exc).__name__}: {exc})"
            ) from exc
        except RetryError as exc:
            if self._stop.is_set():
                raise ClosedError(f"{self!r} is closed") from None
            cause = exc.last_attempt.exception()
            raise TimeoutError(f"join: Redis at {self._where} unreachable: {cause}") from cause


def _check_ids(node_id: Any, namespace: Any) -> None:
    for name, value in (("node_id", node_id), ("namespace", namespace)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{name} must be a non-empty str, got {value!r}")


def _check_join_args(cluster_size: int, timeout: float | None) -> None:
    if isinstance(cluster_size, bool) or not isinstance(cluster_size, int) or cluster_size < 1:
        raise ConfigError(f"cluster_size must be an int >= 1, got {cluster_size!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0
    ):
        raise ConfigError(f"timeout must be None or a number >= 0, got {timeout!r}")


def _full_message(node_id: str, cluster_size: int, members: Sequence[str]) -> str:
    voters = ", ".join(repr(m) for m in members[:cluster_size])
    return (
        f"node {node_id!r} cannot join: the cluster is full ({cluster_size} voters: {voters})"
    )


def _short_message(have: int, cluster_size: int, namespace: str, timeout: float | None) -> str:
    return (f"join: {have} of {cluster_size} nodes registered in namespace {namespace!r} "
            f"after {timeout} s")


def _decode_ids(raw: Any) -> list[str]:
    return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in raw]
