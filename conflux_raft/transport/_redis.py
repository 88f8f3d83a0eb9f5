"""Redis Streams transport: one inbox stream per node, pipelined XADD, blocking XREAD.

Keys of namespace `ns`: `conflux:{ns}:inbox:<node_id>`, a stream whose entries carry the
payload in field `m` (discovery adds `conflux:{ns}:members`; each node publishes its
status to `conflux:{ns}:status:<node_id>` and lists itself in `conflux:{ns}:reporters`).
The hash tag `{ns}` keeps a cluster's keys in one Redis Cluster slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import unquote

import redis
from redis.backoff import NoBackoff
from redis.exceptions import MovedError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_not_exception_type,
    stop_when_event_set,
    wait_random_exponential,
)

from .._errors import ClosedError, ConfigError

__all__ = ["RedisTransport", "connect", "describe", "inbox_key", "reporters_key", "status_key"]

_log = logging.getLogger("conflux_raft.redis")

_COMMAND_ERROR_LOG_EVERY = 60.0  # seconds between two warnings about refused XADDs
_QUIET_CHECK = 1.0  # seconds of an empty inbox before the reader checks it still exists
_TRIM_EVERY = 1.0  # seconds between trims of what the reader has read from its inbox


def inbox_key(namespace: str, node_id: str) -> str:
    """The stream that `node_id` reads."""
    return f"conflux:{{{namespace}}}:inbox:{node_id}"


def status_key(namespace: str, node_id: str) -> str:
    """The key where `node_id` publishes its status (JSON, with an expiry)."""
    return f"conflux:{{{namespace}}}:status:{node_id}"


def reporters_key(namespace: str) -> str:
    """A sorted set: the ids that published a status, scored by when (wall clock), so a
    reader finds the status keys without scanning the keyspace."""
    return f"conflux:{{{namespace}}}:reporters"


REPORTERS_KEPT = 86_400.0  # seconds an id stays in the reporters set after it last published


def connect(url: str, socket_timeout: float, connect_timeout: float,
            health_check_interval: int = 10) -> redis.Redis:
    """A client for `url` that never retries by itself (callers retry with tenacity, in
    their own threads). A bad URL, or one asking for decoded responses, is a ConfigError.

    `url` is `redis://`, `rediss://` (TLS), `unix://`, or
    `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`: the client
    asks the sentinels for the master of `service` at each (re)connection, so it follows a
    failover; the credentials are the master's (sentinels are asked without any). A
    Redis Cluster node that answers MOVED sends the connection to the slot's master (a
    namespace's keys share one slot)."""
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
        "socket_keepalive": True, "health_check_interval": health_check_interval,
        "retry": Retry(NoBackoff(), 0)}
    if not isinstance(url, str):
        raise ConfigError(f"url: a string is required, got {url!r}")
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel_client(url, kwargs)
    if scheme in _FOLLOWING:
        kwargs["connection_class"] = _FOLLOWING[scheme]
    try:
        client = redis.Redis.from_pool(_Pool.from_url(url, **kwargs))
    except ValueError as exc:
        raise ConfigError(f"url: {exc}") from exc
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        client.close()
        raise ConfigError("url: decode_responses must be off (payloads are bytes)")
    return client


def _follow_moved(conn: redis.Connection, read: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """A Redis Cluster node answered MOVED: a namespace's keys share one hash slot, so the
    node named holds all of them. This connection, and those its pool makes from now on,
    go there; the command fails as a lost connection would (the caller retries it)."""
    try:
        return read(*args, **kwargs)
    except MovedError as exc:
        cast(Any, conn).disconnect()
        conn.host, conn.port = exc.host, exc.port
        pool = getattr(conn, "conflux_pool", None)
        if pool is not None:
            pool.connection_kwargs.update(host=exc.host, port=exc.port)
        raise redis.ConnectionError(
            f"Redis Cluster moved slot {exc.slot_id} to {exc.host}:{exc.port}: "
            "reconnecting there") from exc


class _FollowingConnection(redis.Connection):
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        return _follow_moved(self, super().read_response, args, kwargs)


class _FollowingSSLConnection(redis.SSLConnection):
    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        return _follow_moved(self, super().read_response, args, kwargs)


_FOLLOWING: dict[str, type[redis.Connection]] = {
    "redis": _FollowingConnection, "rediss": _FollowingSSLConnection}


class _Pool(redis.ConnectionPool):
    """Its connections can re-point it (`_follow_moved`)."""

    def make_connection(self) -> Any:
        conn = super().make_connection()
        conn.conflux_pool = self  # type: ignore[attr-defined]
        return conn


class _SentinelClient(redis.Redis):
    """The master's client; closing it closes the sentinels' connections too."""

    sentinels: Any = None  # the redis.sentinel.Sentinel that found the master

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.sentinels is not None:
                self.sentinels.close()


def _sentinel_client(url: str, kwargs: dict[str, Any]) -> redis.Redis:
    """A master client for `redis+sentinel://[user:password@]h:p[,h:p...]/service[/db]`."""
    scheme, rest = url.split("://", 1)
    if scheme.lower() != "redis+sentinel":
        raise ConfigError("url: TLS through Sentinel (rediss+sentinel://) is not supported")
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if query:
        raise ConfigError(f"url: a redis+sentinel:// URL takes no options, got ?{query}")
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            kwargs["password"] = unquote(password)
        else:  # like redis://secret@host: a password alone
            user, kwargs["password"] = "", unquote(user)
        if user:
            kwargs["username"] = unquote(user)
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or host.endswith(":"):  # no port, or a bare IPv6 address
            host, port = item, "26379"
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"url: a sentinel must be host[:port], got {item!r}")
        sentinels.append((host, int(port)))
    parts = path.strip("/").split("/") if path.strip("/") else []
    if not 1 <= len(parts) <= 2 or not parts[0] or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigError("url: redis+sentinel://[user:password@]host:port[,host:port]"
                          f"/service[/db] is required, got path /{path}")
    service = unquote(parts[0])
    if len(parts) == 2:
        kwargs["db"] = int(parts[1])
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinel_kwargs["retry"] = Retry(NoBackoff(), 0)
    sentinel: Any = cast(Any, Sentinel)(sentinels, sentinel_kwargs=sentinel_kwargs, **kwargs)
    client: _SentinelClient = sentinel.master_for(service, redis_class=_SentinelClient)
    client.sentinels = sentinel
    return client


def describe(client: redis.Redis) -> str:
    """Where `client` connects, for logs: never the password."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        sentinels = ",".join(
            f"{s.connection_pool.connection_kwargs.get('host')}:"
            f"{s.connection_pool.connection_kwargs.get('port')}"
            for s in pool.sentinel_manager.sentinels)
        return f"the master of {pool.service_name!r} (sentinels {sentinels})"
    kwargs = pool.connection_kwargs
    return str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")


class _Stopped(Exception):
    """close() was called: a background loop ends."""


def _check_positive(name: str, value: object, *, integer: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value <= 0
        or (integer and not isinstance(value, int))
    ):
        kind = "int" if integer else "number"
        raise ConfigError(f"{name} must be a positive {kind}, got {value!r}")


class RedisTransport:
    """A node's endpoint on Redis Streams.

    `send` writes a batch as one non-transactional pipeline of
    `XADD <inbox> MAXLEN ~ maxlen * m <payload>`: at once, in the caller's thread, when
    the connection is idle and healthy; else it queues the batch (bounded: beyond
    `queue_size` messages it drops and counts) for a sender thread that writes everything
    queued in one pipeline. Order is kept. A reader thread runs blocking `XREAD` on
    this node's inbox, from the entries that arrive after `start`. Both threads survive
    connection loss: they retry with exponential backoff and full jitter, capped at
    `backoff_max` seconds, until `close`, warning once per outage.
    """

    def __init__(
        self,
        node_id: str,
        url: str,
        namespace: str,
        *,
        maxlen: int = 10_000,
        block_ms: int = 150,
        read_count: int = 1_000,
        queue_size: int = 10_000,
        socket_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        backoff_max: float = 1.0,
        health_check_interval: int = 10,
        inbox_ttl: float = 60.0,
    ) -> None:
        for name, value in (("node_id", node_id), ("url", url), ("namespace", namespace)):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty str, got {value!r}")
        _check_positive("maxlen", maxlen, integer=True)
        _check_positive("block_ms", block_ms, integer=True)
        _check_positive("read_count", read_count, integer=True)
        _check_positive("queue_size", queue_size, integer=True)
        _check_positive("health_check_interval", health_check_interval, integer=True)
        _check_positive("socket_timeout", socket_timeout)
        _check_positive("connect_timeout", connect_timeout)
        _check_positive("backoff_max", backoff_max)
        _check_positive("inbox_ttl", inbox_ttl)
        self.node_id = node_id
        self.namespace = namespace
        self._inbox = inbox_key(namespace, node_id)
        self._prefix = inbox_key(namespace, "")
        self._maxlen = maxlen
        self._block_ms = block_ms
        self._read_count = read_count
        self._queue_size = queue_size
        self._backoff_max = backoff_max
        self._ttl_ms = max(int(inbox_ttl * 1000), 1)
        self._keep_due = 0.0  # when the reader next renews the inbox's expiry
        self._trim_due = 0.0  # when the reader next drops what it has read

        self._writer = connect(url, socket_timeout, connect_timeout, health_check_interval)
        # A blocked XREAD must not hit the socket timeout.
        self._reader_client = connect(url, socket_timeout + block_ms / 1000, connect_timeout,
                                      health_check_interval)
        self._where = describe(self._writer)

        self._stop = threading.Event()
        self._cv = threading.Condition()  # guards the queue, the counters and the state
        self._queue: list[tuple[str, bytes]] = []
        self._writing = False  # a pipeline is being written (by send or by the sender)
        self._closed = False
        self._down = False
        self._down_since = 0.0
        self._down_error = ""
        self._deliver: Callable[[bytes], None] | None = None
        self._last_id: bytes | str | None = None
        self._resync = False  # after a failed read: check the inbox was not reset
        self._reader: threading.Thread | None = None
        self._sender: threading.Thread | None = None
        self._sent = 0
        self._received = 0
        self._dropped = 0
        self._reconnects = 0
        self._flushes = 0
        self._last_command_error_log = -_COMMAND_ERROR_LOG_EVERY
        self._publish_warned = False

    def __repr__(self) -> str:
        return f"RedisTransport({self.node_id!r}, {self._where!r}, {self.namespace!r})"

    # ---- the Transport protocol --------------------------------------------------------

    def start(self, deliver: Callable[[bytes], None]) -> None:
        """Start the reader: entries added to this node's inbox from now on go to
        `deliver`. Tries once to note where the inbox ends (bounded by the socket
        timeouts); if Redis is unreachable the reader does it once connected."""
        with self._cv:
            if self._closed:
                raise ClosedError(f"{self!r} is closed")
            if self._deliver is not None:
                raise RuntimeError(f"{self!r} is already started")
            self._deliver = deliver
        try:
            self._keep_inbox()
            self._last_id = self._inbox_end()
        except Exception as exc:  # Redis unreachable: the reader will retry
            self._mark_down(exc)
        reader = threading.Thread(
            target=self._read_loop, name=f"conflux-redis-reader-{self.node_id}", daemon=True
        )
        with self._cv:
            if self._closed:
                return
            self._reader = reader
            reader.start()
            self._ensure_sender()

    def send(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Write `batch` at once when the connection is idle and healthy (one round trip,
        in the caller's thread); else queue it for the sender thread and return. What
        does not fit in the queue (or comes after close) is dropped and counted."""
        with self._cv:
            if self._closed:
                self._dropped += len(batch)
                return
            if not self._queue and not self._writing and not self._down:
                self._writing = True  # nothing queued: order is kept
            else:
                self._enqueue(batch)
                return
        try:
            self._write(batch)
        except Exception as exc:  # the sender thread reconnects; later sends queue
            with self._cv:
                self._dropped += len(batch)
            self._mark_down(exc)
        finally:
            with self._cv:
                self._writing = False
                if self._queue:
                    self._ensure_sender()
                    self._cv.notify()

    def _enqueue(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """Queue for the sender thread (called with the lock held)."""
        room = self._queue_size - len(self._queue)
        if room >= len(batch):
            self._queue.extend(batch)
        else:
            self._queue.extend(batch[: max(room, 0)])
            self._dropped += len(batch) - max(room, 0)
        self._ensure_sender()
        self._cv.notify()

    def stats(self) -> dict[str, int]:
        """Counters: sent, received, dropped, reconnects; also flushes (pipelines
        written) and queued (messages waiting for the sender)."""
        with self._cv:
            return {
                "sent": self._sent,
                "received": self._received,
                "dropped": self._dropped,
                "reconnects": self._reconnects,
                "flushes": self._flushes,
                "queued": len(self._queue),
            }

    def close(self) -> None:
        """Stop both threads (what is still queued is dropped) and close the connections.
        Idempotent. A thread stuck on an unresponsive server is cut off by closing its
        socket."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            self._cv.notify_all()
        # Reading loses nothing: cut a blocked XREAD short at once. The sender gets a
        # moment to finish the pipeline it may be writing.
        self._disconnect(self._reader_client)
        threads = [
            t
            for t in (self._reader, self._sender)
            if t is not None and t is not threading.current_thread()
        ]
        grace = time.monotonic() + self._block_ms / 1000 + 0.1
        for thread in threads:
            thread.join(max(0.0, grace - time.monotonic()))
        if any(t.is_alive() for t in threads):  # stuck on a server that answers nothing
            self._disconnect(self._writer)
            self._disconnect(self._reader_client)
            limit = time.monotonic() + 0.5
            for thread in threads:
                thread.join(max(0.0, limit - time.monotonic()))
        self._writer.close()
        self._reader_client.close()

    def _disconnect(self, client: redis.Redis) -> None:
        """Close every socket of `client`, in use or not (a blocked call then fails)."""
        try:
            client.connection_pool.disconnect(inuse_connections=True)
        except Exception:  # best effort: sockets may already be gone
            _log.debug("%r: error while disconnecting", self, exc_info=True)

    def publish(self, payload: bytes | None, ttl: float) -> None:
        """Set this node's status key to `payload`, expiring in `ttl` seconds, and list the
        node among the reporters (None deletes both): one pipeline, in the caller's thread
        (not the loop's). Skipped while Redis is down or after close; never raises."""
        if self._down or self._closed:
            return
        key = status_key(self.namespace, self.node_id)
        reporters = reporters_key(self.namespace)
        now = time.time()
        try:
            with self._writer.pipeline(transaction=False) as pipe:
                if payload is None:
                    pipe.delete(key)
                    pipe.zrem(reporters, self.node_id)
                else:
                    pipe.set(key, payload, px=max(int(ttl * 1000), 1))
                    pipe.zadd(reporters, {self.node_id: now})
                    pipe.zremrangebyscore(reporters, "-inf", now - REPORTERS_KEPT)
                    pipe.pexpire(reporters, int(REPORTERS_KEPT * 1000))
                pipe.execute()
        except Exception as exc:  # an outage is the reader's and sender's to report
            level = logging.DEBUG if self._publish_warned else logging.WARNING
            self._publish_warned = True
            _log.log(level, "%r: status not published (%s: %s)", self, type(exc).__name__, exc)

    # ---- connection state --------------------------------------------------------------

    def health(self) -> str | None:
        """None while Redis answers; else since when it does not, and the last error."""
        with self._cv:
            if not self._down:
                return None
            return (f"Redis at {self._where} unreachable for "
                    f"{time.monotonic() - self._down_since:.1f} s ({self._down_error})")

    def _mark_down(self, exc: BaseException) -> None:
        with self._cv:
            if self._down or self._stop.is_set():
                return
            self._down = True
            self._down_since = time.monotonic()
            self._down_error = f"{type(exc).__name__}: {exc}"
        _log.warning(
            "%r: Redis at %s failed (%s: %s); retrying in the background",
            self, self._where, type(exc).__name__, exc,
        )

    def _mark_up(self) -> None:
        if not self._down:  # the usual case, without the lock
            return
        with self._cv:
            if not self._down:
                return
            self._down = False
            self._reconnects += 1
        _log.info("%r: Redis at %s works again", self, self._where)

    def _retrying(self, before_sleep: Callable[[RetryCallState], None] | None = None) -> Retrying:
        """Retry until success or close; sleeps end early on close."""

        def note(state: RetryCallState) -> None:
            if state.outcome is not None and (exc := state.outcome.exception()) is not None:
                self._mark_down(exc)
            if before_sleep is not None:
                before_sleep(state)

        def sleep(seconds: float) -> None:
            self._stop.wait(seconds)

        return Retrying(
            sleep=sleep,
            stop=stop_when_event_set(self._stop),
            wait=wait_random_exponential(multiplier=0.1, max=self._backoff_max),
            retry=retry_if_not_exception_type(_Stopped),
            before_sleep=note,
        )

    # ---- the reader --------------------------------------------------------------------

    def _inbox_end(self) -> bytes | str:
        """The id of the last entry in the inbox ("0-0" if empty): reading resumes after it."""
        last: Any = self._reader_client.xrevrange(self._inbox, "+", "-", count=1)
        return cast("bytes", last[0][0]) if last else "0-0"

    def _keep_inbox(self) -> None:
        """Make this node's inbox live `inbox_ttl` more seconds, creating it (empty) if it
        is gone: at first start, or after Redis lost its data. Senders never create an
        inbox (NOMKSTREAM), so the inbox of a node that is gone expires."""
        client, ttl = self._reader_client, self._ttl_ms
        if not client.pexpire(self._inbox, ttl):
            client.xadd(self._inbox, {b"m": b""}, maxlen=0, approximate=False)
            client.pexpire(self._inbox, ttl)
        self._keep_due = time.monotonic() + ttl / 3000

    def _read_once(self) -> Any:
        if self._stop.is_set():
            raise _Stopped
        if self._resync or self._last_id is None or time.monotonic() >= self._keep_due:
            self._keep_inbox()
        if self._last_id is None:
            self._last_id = self._inbox_end()
        elif self._resync:
            # A Redis restarted empty (or one whose clock is behind) numbers new entries
            # below the last id we saw: start again from its end rather than read nothing.
            end = self._inbox_end()
            if _id_order(end) < _id_order(self._last_id):
                self._last_id = end
        self._resync = False
        now = time.monotonic()
        if now >= self._trim_due and self._last_id != "0-0":
            # What was read is delivered: drop it, so that the inbox holds about a second
            # of traffic rather than `maxlen` messages already read.
            self._reader_client.xtrim(self._inbox, minid=self._last_id, approximate=True)
            self._trim_due = now + _TRIM_EVERY
        reply = self._reader_client.xread(
            {self._inbox: self._last_id}, count=self._read_count, block=self._block_ms
        )
        self._mark_up()
        if not reply:  # quiet: if the inbox is gone (a flushed Redis), make it again soon
            self._keep_due = min(self._keep_due, time.monotonic() + _QUIET_CHECK)
        return reply

    def _read_failed(self, _state: RetryCallState) -> None:
        self._resync = True

    def _read_loop(self) -> None:
        retrying = self._retrying(before_sleep=self._read_failed)
        try:
            while True:
                try:
                    reply = self._read_once()  # the usual case, without retry machinery
                except _Stopped:
                    raise
                except Exception as exc:  # an outage: back off until Redis answers
                    self._mark_down(exc)
                    self._resync = True
                    reply = retrying(self._read_once)
                self._hand_over(reply)
        except (_Stopped, RetryError):
            pass
        except Exception:  # a bug, not an outage: say so rather than die silently
            _log.exception("%r: the reader stopped", self)

    def _hand_over(self, reply: Any) -> None:
        """Pass each entry's field `m` to deliver (b"" when it has none)."""
        streams = reply.items() if isinstance(reply, dict) else reply or ()
        deliver = self._deliver
        assert deliver is not None
        for _key, entries in streams:
            for entry_id, fields in entries:
                self._last_id = entry_id
                payload = fields.get(b"m") if isinstance(fields, dict) else None
                if not isinstance(payload, bytes):
                    payload = b""
                with self._cv:
                    self._received += 1
                try:
                    deliver(payload)
                except Exception:
                    _log.exception("%r: deliver raised; the entry is lost", self)

    # ---- the sender --------------------------------------------------------------------

    def _ensure_sender(self) -> None:
        """Start the sender thread if it is not running (called with the lock held)."""
        if self._sender is None and not self._closed:
            self._sender = threading.Thread(
                target=self._send_loop, name=f"conflux-redis-sender-{self.node_id}", daemon=True
            )
            self._sender.start()

    def _take(self) -> list[tuple[str, bytes]]:
        """Wait for messages and take all of them; raise _Stopped on close."""
        with self._cv:
            while (not self._queue or self._writing) and not self._stop.is_set():
                self._cv.wait()
            if self._stop.is_set():
                self._dropped += len(self._queue)
                self._queue = []
                raise _Stopped
            batch, self._queue = self._queue, []
            self._writing = True
            return batch

    def _discard_queued(self, _state: RetryCallState) -> None:
        """While Redis is away, what is queued could not be sent: drop it."""
        with self._cv:
            self._dropped += len(self._queue)
            self._queue = []

    def _probe(self) -> None:
        if self._stop.is_set():
            raise _Stopped
        self._writer.ping()
        self._mark_up()

    def _write(self, batch: Sequence[tuple[str, bytes]]) -> None:
        """One round trip: an XADD per message, in a non-transactional pipeline."""
        prefix, maxlen = self._prefix, self._maxlen
        with self._writer.pipeline(transaction=False) as pipe:
            for dst, payload in batch:
                pipe.xadd(prefix + dst, {b"m": payload}, maxlen=maxlen, approximate=True,
                          nomkstream=True)
            results = pipe.execute(raise_on_error=False)
        failed = [r for r in results if isinstance(r, Exception)]
        gone = sum(1 for r in results if r is None)  # no such inbox: its node is gone
        with self._cv:
            self._flushes += 1
            self._sent += len(batch) - len(failed) - gone
            self._dropped += len(failed) + gone
        if failed:
            now = time.monotonic()
            if now - self._last_command_error_log >= _COMMAND_ERROR_LOG_EVERY:
                self._last_command_error_log = now
                _log.warning(
                    "%r: Redis refused %d of %d messages (first: %s)",
                    self, len(failed), len(batch), failed[0],
                )

    def _done_writing(self) -> None:
        with self._cv:
            self._writing = False

    def _send_loop(self) -> None:
        probing = self._retrying(before_sleep=self._discard_queued)
        try:
            while True:
                batch = self._take()
                try:
                    self._write(batch)
                    self._mark_up()
                except Exception as exc:  # lost connection (or worse): drop, then reconnect
                    with self._cv:
                        self._dropped += len(batch)
                    self._mark_down(exc)
                    self._done_writing()
                    probing(self._probe)
                self._done_writing()
        except (_Stopped, RetryError):
            pass
        except Exception:  # a bug, not an outage
            _log.exception("%r: the sender stopped", self)


def _id_order(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>") as a sortable pair; (0, 0) if malformed."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0
