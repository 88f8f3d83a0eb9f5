"""Both transports move opaque bytes intact; the Redis one against a real redis-server,
through garbage, trimming, a restart and a pause of the server."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import redis

from conflux_raft import ClosedError, ClusterFull, ConfigError
from conflux_raft.transport import (
    Discovery,
    MemoryDiscovery,
    MemoryHub,
    MemoryTransport,
    RedisDiscovery,
    RedisTransport,
    Transport,
    inbox_key,
    members_key,
)

if TYPE_CHECKING:
    from conftest import RedisServer

WAIT = 10.0  # upper bound of every wait; a passing run is far quicker


def eventually(check: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Poll `check` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or check}")
        time.sleep(0.01)


class Inbox:
    """A deliver callback that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self._lock = threading.Lock()

    def __call__(self, raw: bytes) -> None:
        with self._lock:
            self.items.append(raw)

    def snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self.items)

    def wait(self, count: int) -> list[bytes]:
        """The first `count` payloads, once that many arrived."""
        eventually(lambda: len(self.items) >= count, what=f"{count} messages")
        return self.snapshot()[:count]


class Net:
    """Transports of one kind in one namespace, all closed at the end of the test."""

    def __init__(self, kind: str, namespace: str, url: str) -> None:
        self.kind = kind
        self.namespace = namespace
        self.url = url
        self.made: list[Transport | Discovery] = []

    def make(self, node_id: str, **options: Any) -> Transport:
        transport: Transport
        if self.kind == "memory":
            transport = MemoryTransport(node_id, self.namespace)
        else:
            transport = RedisTransport(node_id, self.url, self.namespace, **options)
        self.made.append(transport)
        return transport

    def discovery(self, node_id: str) -> Discovery:
        discovery: Discovery
        if self.kind == "memory":
            discovery = MemoryDiscovery(node_id, self.namespace)
        else:
            discovery = RedisDiscovery(node_id, self.url, self.namespace)
        self.made.append(discovery)
        return discovery

    def started(self, node_id: str, **options: Any) -> tuple[Transport, Inbox]:
        transport = self.make(node_id, **options)
        inbox = Inbox()
        transport.start(inbox)
        return transport, inbox

    def close(self) -> None:
        for transport in self.made:
            transport.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def net(request: pytest.FixtureRequest, namespace: str) -> Iterator[Net]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    network = Net(request.param, namespace, url)
    yield network
    network.close()


@pytest.fixture
def redis_net(redis_url: str, namespace: str) -> Iterator[Net]:
    network = Net("redis", namespace, redis_url)
    yield network
    network.close()


# ---- both transports -----------------------------------------------------------------


def test_payloads_arrive_intact_and_in_order(net: Net) -> None:
    a, inbox_a = net.started("a")
    b, inbox_b = net.started("b")
    c, inbox_c = net.started("c")
    payloads = [b"", b"\x00\xff" * 10, bytes(range(256)), os.urandom(100_000), "é€".encode()]
    a.send([("b", p) for p in payloads] + [("c", p) for p in reversed(payloads)])
    b.send([("a", b"back")])
    assert inbox_b.wait(len(payloads)) == payloads
    assert inbox_c.wait(len(payloads)) == payloads[::-1]
    assert inbox_a.wait(1) == [b"back"]
    eventually(lambda: a.stats()["sent"] == 2 * len(payloads), what="a's sent count")
    assert b.stats()["received"] == len(payloads)
    assert c.stats()["received"] == len(payloads)
    for transport in (a, b, c):
        assert {"sent", "received", "dropped", "reconnects"} <= transport.stats().keys()


def test_a_restarted_node_reads_only_new_messages(net: Net) -> None:
    a, _ = net.started("a")
    b, inbox_b = net.started("b")
    a.send([("b", b"first")])
    assert inbox_b.wait(1) == [b"first"]
    b.close()
    a.send([("b", b"while away")])
    eventually(lambda: a.stats()["sent"] + a.stats()["dropped"] == 2, what="a's second send")
    _, inbox_b2 = net.started("b")
    a.send([("b", b"after restart")])
    assert inbox_b2.wait(1) == [b"after restart"]
    a.send([("b", b"marker")])
    assert inbox_b2.wait(2) == [b"after restart", b"marker"]
    assert inbox_b.snapshot() == [b"first"]


def test_join_keeps_registration_order_and_refuses_extra_nodes(net: Net) -> None:
    a, b, c, d = (net.discovery(n) for n in "abcd")
    for early in (a, b):
        with pytest.raises(TimeoutError) as info:
            early.join(3, timeout=0)
        assert not isinstance(info.value, ClusterFull)
    assert c.join(3, timeout=WAIT) == ["a", "b", "c"]
    assert a.join(3, timeout=WAIT) == ["a", "b", "c"]  # a second join keeps the slot
    with pytest.raises(ClusterFull, match="'d'"):
        d.join(3, timeout=WAIT)
    with pytest.raises(ClusterFull):  # and a refused id stays refused
        d.join(3, timeout=WAIT)
    assert net.discovery("a").join(3, timeout=WAIT) == ["a", "b", "c"]  # a restarted node


def test_join_waits_until_the_cluster_is_complete(net: Net) -> None:
    a, b = net.discovery("a"), net.discovery("b")
    with pytest.raises(TimeoutError):
        a.join(2, timeout=0)  # registers a first
    result: list[list[str]] = []
    waiter = threading.Thread(target=lambda: result.append(a.join(2, timeout=WAIT)))
    waiter.start()
    assert b.join(2, timeout=WAIT) == ["a", "b"]
    waiter.join(WAIT)
    assert result == [["a", "b"]]


def test_close_wakes_a_waiting_join(net: Net) -> None:
    a = net.discovery("a")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            a.join(2, timeout=WAIT)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    eventually(lambda: "a" in MemoryHub.get(net.namespace).members if net.kind == "memory"
               else True, what="a to register")
    time.sleep(0.1)
    a.close()
    waiter.join(WAIT)
    assert not waiter.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ClosedError)


def test_join_rejects_nonsense(net: Net) -> None:
    a = net.discovery("a")
    for size in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="cluster_size"):
            a.join(size, timeout=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timeout"):
        a.join(1, timeout=-1)
    assert a.join(1, timeout=None) == ["a"]


def test_close_is_idempotent_and_stops_every_thread(net: Net) -> None:
    before = set(threading.enumerate())
    a, _ = net.started("a")
    b, inbox_b = net.started("b")
    a.send([("b", b"x")])
    inbox_b.wait(1)
    for transport in (a, b):
        transport.close()
        transport.close()
    assert set(threading.enumerate()) <= before
    dropped = a.stats()["dropped"]
    a.send([("b", b"after close")])  # harmless, counted
    assert a.stats()["dropped"] == dropped + 1
    with pytest.raises(ClosedError):
        a.start(Inbox())


def test_start_twice_is_refused(net: Net) -> None:
    a, _ = net.started("a")
    with pytest.raises(RuntimeError, match="already started"):
        a.start(Inbox())


# ---- Redis ---------------------------------------------------------------------------


def test_a_batch_goes_out_in_one_pipeline(redis_net: Net) -> None:
    a = redis_net.make("a")
    inboxes = {n: redis_net.started(n)[1] for n in ("b", "c", "d")}
    a.send([("b", b"warm-up")])
    inboxes["b"].wait(1)
    eventually(lambda: a.stats()["sent"] == 1, what="the warm-up counted")
    flushes = a.stats()["flushes"]
    batch = [(n, f"{n}{i}".encode()) for i in range(100) for n in inboxes]
    a.send(batch)
    for n, inbox in inboxes.items():
        expected = [f"{n}{i}".encode() for i in range(100)]
        assert inbox.wait(100 + (n == "b"))[-100:] == expected
    eventually(lambda: a.stats()["sent"] == 1 + len(batch), what="the batch counted")
    assert a.stats()["flushes"] == flushes + 1


def test_garbage_in_an_inbox_is_passed_on_and_the_reader_lives(
    redis_net: Net, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    b, inbox = redis_net.started("b")
    key = inbox_key(redis_net.namespace, "b")
    client = redis_server.client()
    try:
        client.xadd(key, {"x": "no m field"})
        client.xadd(key, {"m": b"\xff\x00not a message"})
        client.xadd(key, {"other": "1", "m": "", "more": "2"})
        client.xadd(key, {"M": "capital"})
        assert inbox.wait(4) == [b"", b"\xff\x00not a message", b"", b""]
        # The inbox replaced by a key of the wrong type: the reader retries, then resumes.
        with caplog.at_level(logging.WARNING, logger="conflux_raft.redis"):
            client.delete(key)
            client.set(key, "not a stream")
            eventually(lambda: "retrying" in caplog.text, what="a warning")
            client.delete(key)
            a = redis_net.make("a")

            def resent() -> bool:  # until b's reader has made its inbox again
                a.send([("b", b"real")])
                time.sleep(0.05)
                return len(inbox.snapshot()) >= 5

            eventually(resent, what="a message once the inbox is back")
            assert set(inbox.snapshot()[4:]) == {b"real"}
    finally:
        client.close()
    assert b.stats()["received"] == len(inbox.snapshot()) >= 5


def test_maxlen_keeps_the_inbox_bounded(redis_net: Net, redis_server: RedisServer) -> None:
    a = redis_net.make("a", maxlen=100)
    redis_net.started("b")  # senders never create an inbox: its node does
    for start in range(0, 3_000, 500):
        a.send([("b", b"%d" % i) for i in range(start, start + 500)])
    eventually(lambda: a.stats()["sent"] == 3_000, what="3000 messages written")
    client = redis_server.client()
    try:
        length = client.xlen(inbox_key(redis_net.namespace, "b"))
    finally:
        client.close()
    # "~" trims whole macro-nodes (100 entries by default), never below maxlen.
    assert 100 <= length <= 300


def test_send_returns_at_once_and_counts_drops_when_redis_is_unreachable(
    namespace: str,
) -> None:
    with socket_nobody_listens_on() as port:
        a = RedisTransport(
            "a", f"redis://127.0.0.1:{port}/0", namespace, queue_size=10, connect_timeout=0.2
        )
        try:
            a.send([("b", b"%d" % i) for i in range(100)])
            assert a.stats()["dropped"] >= 90
            eventually(lambda: a.stats()["dropped"] == 100, what="all 100 dropped")
            assert a.stats()["sent"] == 0
            nobody = RedisDiscovery("a", f"redis://127.0.0.1:{port}/0", namespace,
                                    connect_timeout=0.2)
            with pytest.raises(TimeoutError):
                nobody.join(1, timeout=0.3)
            nobody.close()
        finally:
            a.close()


def test_the_transport_recovers_by_itself_after_redis_restarts(
    redis_net: Net, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, inbox_a = redis_net.started("a")
    b, inbox_b = redis_net.started("b")
    a.send([("b", b"before")])
    assert inbox_b.wait(1) == [b"before"]
    with caplog.at_level(logging.WARNING, logger="conflux_raft.redis"):
        redis_server.stop()
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:  # Redis is away for about 2 s
                a.send([("b", b"lost")])
                time.sleep(0.05)
        finally:
            redis_server.start()

        def flows(src: Transport, inbox: Inbox, dst: str) -> bool:
            src.send([(dst, b"after")])
            return b"after" in inbox.snapshot()

        eventually(lambda: flows(a, inbox_b, "b"), what="a -> b after the restart")
        eventually(lambda: flows(b, inbox_a, "a"), what="b -> a after the restart")
    assert a.stats()["reconnects"] >= 1 and b.stats()["reconnects"] >= 1
    assert a.stats()["dropped"] >= 1
    for node in (a, b):
        down = [
            r.getMessage()
            for r in caplog.records
            if "retrying" in r.getMessage() and repr(node) in r.getMessage()
        ]
        assert 1 <= len(down) <= 2, down  # once per outage, not once per retry


def test_a_reset_inbox_numbered_below_what_was_read_is_still_read(
    redis_net: Net, redis_server: RedisServer
) -> None:
    """A Redis restarted empty with a clock behind numbers entries below the ids seen."""
    a, _ = redis_net.started("a")
    _, inbox = redis_net.started("b")
    a.send([("b", b"before")])
    assert inbox.wait(1) == [b"before"]
    redis_server.stop()
    redis_server.start()
    key = inbox_key(redis_net.namespace, "b")
    client = redis_server.client()
    try:
        seq = iter(range(1, 1_000_000))

        def low_entry_read() -> bool:
            try:
                client.xadd(key, {"m": b"low"}, id=f"1-{next(seq)}")
            except redis.ResponseError:  # b made its inbox again, numbered by the real clock
                client.delete(key)
            return b"low" in inbox.snapshot()

        eventually(low_entry_read, what="an entry numbered 1-n")
    finally:
        client.close()


def test_a_paused_redis_neither_hangs_close_nor_stops_recovery(
    redis_net: Net, redis_server: RedisServer
) -> None:
    before = set(threading.enumerate())
    a, _ = redis_net.started("a", socket_timeout=0.5)
    b, inbox_b = redis_net.started("b", socket_timeout=0.5)
    c, _ = redis_net.started("c", socket_timeout=0.5)
    a.send([("b", b"before")])
    assert inbox_b.wait(1) == [b"before"]
    redis_server.pause()
    try:
        time.sleep(0.3)  # the readers sit in XREAD on a server that answers nothing
        c.close()
        assert not any(t.name.endswith("-c") for t in threading.enumerate())
        time.sleep(1.0)
    finally:
        redis_server.resume()

    def flows() -> bool:
        a.send([("b", b"after")])
        return b"after" in inbox_b.snapshot()

    eventually(flows, what="a -> b after the pause")
    a.close()
    b.close()
    assert set(threading.enumerate()) <= before


def test_acl_user_and_password_in_the_url(
    redis_net: Net, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"u{redis_net.namespace[-8:]}"
    client = redis_server.client()
    try:
        client.acl_setuser(user, enabled=True, passwords=["+s3cret"], keys=["conflux:*"],
                           commands=["+@all"])
        url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0"
        bad_url = url.replace("s3cret", "wrong")
        a = RedisTransport("a", url, redis_net.namespace)
        b = RedisTransport("b", url, redis_net.namespace)
        wrong = RedisTransport("w", bad_url, redis_net.namespace)
        joins = [RedisDiscovery(i, u, redis_net.namespace)
                 for i, u in (("a", url), ("b", url), ("w", bad_url))]
        redis_net.made += [a, b, wrong, *joins]
        inbox = Inbox()
        b.start(inbox)
        with pytest.raises(TimeoutError):
            joins[1].join(2, timeout=0)
        assert joins[0].join(2, timeout=WAIT) == ["b", "a"]
        a.send([("b", b"hello")])
        assert inbox.wait(1) == [b"hello"]
        with pytest.raises(ConfigError, match=r"url.*AuthenticationError"):
            joins[2].join(1, timeout=WAIT)  # waiting would not help: at once
        with caplog.at_level(logging.WARNING, logger="conflux_raft.redis"):
            wrong.start(Inbox())  # the threads: logged, retried, never raised
            wrong.send([("b", b"refused")])
            eventually(lambda: wrong.stats()["dropped"] == 1, what="the refused send")
        assert any(repr(wrong) in r.getMessage() for r in caplog.records)
        assert "s3cret" not in caplog.text
    finally:
        client.acl_deluser(user)
        client.close()


def test_bad_options_are_config_errors(namespace: str) -> None:
    url = "redis://127.0.0.1:1/0"
    with pytest.raises(ConfigError, match="node_id"):
        RedisTransport("", url, namespace)
    with pytest.raises(ConfigError, match="maxlen"):
        RedisTransport("a", url, namespace, maxlen=0)
    with pytest.raises(ConfigError, match="block_ms"):
        RedisTransport("a", url, namespace, block_ms=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="url"):
        RedisTransport("a", "http://127.0.0.1/", namespace)
    with pytest.raises(ConfigError, match="decode_responses"):
        RedisTransport("a", url + "?decode_responses=True", namespace)
    with pytest.raises(ConfigError, match="namespace"):
        MemoryTransport("a", "")


def test_keys_share_the_namespace_hash_tag() -> None:
    assert inbox_key("ns", "n1") == "conflux:{ns}:inbox:n1"
    assert members_key("ns") == "conflux:{ns}:members"


# ---- memory hub fault hooks ----------------------------------------------------------


@pytest.fixture
def hub_net(namespace: str) -> Iterator[tuple[MemoryHub, dict[str, Transport], dict[str, Inbox]]]:
    network = Net("memory", namespace, "")
    nodes: dict[str, Transport] = {}
    inboxes: dict[str, Inbox] = {}
    for node_id in ("a", "b", "c", "d"):
        nodes[node_id], inboxes[node_id] = network.started(node_id)
    yield MemoryHub.get(namespace), nodes, inboxes
    network.close()


def _everyone_to_everyone(nodes: dict[str, Transport]) -> None:
    for src, transport in nodes.items():
        transport.send([(dst, src.encode()) for dst in nodes if dst != src])


def _heard(inboxes: dict[str, Inbox]) -> dict[str, set[str]]:
    return {n: {raw.decode() for raw in inbox.snapshot()} for n, inbox in inboxes.items()}


def test_memory_partition_and_heal(
    hub_net: tuple[MemoryHub, dict[str, Transport], dict[str, Inbox]],
) -> None:
    hub, nodes, inboxes = hub_net
    hub.partition(["a", "b"], "c")  # d, named nowhere, forms the last group: alone here
    _everyone_to_everyone(nodes)
    assert _heard(inboxes) == {"a": {"b"}, "b": {"a"}, "c": set(), "d": set()}
    assert nodes["c"].stats()["dropped"] == 3
    hub.heal()
    for inbox in inboxes.values():
        inbox.items.clear()
    _everyone_to_everyone(nodes)
    assert _heard(inboxes) == {n: set(nodes) - {n} for n in nodes}
    with pytest.raises(ConfigError):
        hub.partition(["a"], ["a", "b"])


def test_memory_isolate(hub_net: tuple[MemoryHub, dict[str, Transport], dict[str, Inbox]]) -> None:
    hub, nodes, inboxes = hub_net
    hub.isolate("a")
    _everyone_to_everyone(nodes)
    nodes["a"].send([("a", b"self")])  # a node still hears itself
    heard = _heard(inboxes)
    assert heard["a"] == {"self"}
    assert heard["b"] == {"c", "d"}


def test_memory_drop_is_seeded(
    hub_net: tuple[MemoryHub, dict[str, Transport], dict[str, Inbox]],
) -> None:
    hub, nodes, inboxes = hub_net
    runs = []
    for _ in range(2):
        inboxes["b"].items.clear()
        hub.drop(0.5, seed=7)
        nodes["a"].send([("b", b"%d" % i) for i in range(200)])
        runs.append(inboxes["b"].snapshot())
    assert runs[0] == runs[1]
    assert 50 < len(runs[0]) < 150
    hub.drop(0)
    nodes["a"].send([("b", b"x")] * 10)
    assert inboxes["b"].snapshot()[-10:] == [b"x"] * 10
    with pytest.raises(ConfigError):
        hub.drop(1.5)


def test_memory_delay_holds_and_reorders(
    hub_net: tuple[MemoryHub, dict[str, Transport], dict[str, Inbox]],
) -> None:
    hub, nodes, inboxes = hub_net
    hub.delay(0.05, jitter=0.2, seed=3)
    sent = [b"%d" % i for i in range(50)]
    nodes["a"].send([("b", raw) for raw in sent])
    assert inboxes["b"].snapshot() == []  # nothing before its time
    got = inboxes["b"].wait(50)
    assert sorted(got) == sorted(sent) and got != sent
    hub.heal()
    nodes["a"].send([("b", b"now")])
    assert inboxes["b"].snapshot()[-1] == b"now"
    eventually(lambda: not any(t.name.startswith("conflux-memory-delay") for t in
                               threading.enumerate()), what="the delay thread to end")


def test_memory_reset_gives_a_fresh_hub(namespace: str) -> None:
    a = MemoryTransport("a", namespace)
    assert MemoryDiscovery("a", namespace).join(1, timeout=0) == ["a"]
    MemoryHub.reset(namespace)
    fresh = MemoryHub.get(namespace)
    assert fresh is not a.hub and fresh.members == []
    b = MemoryTransport("b", namespace)
    assert b.hub is fresh
    assert MemoryDiscovery("b", namespace).join(1, timeout=0) == ["b"]
    a.close()
    b.close()


@contextmanager
def socket_nobody_listens_on() -> Iterator[int]:
    """A 127.0.0.1 port held bound but not listening, so connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def test_a_gone_nodes_inbox_expires_and_senders_do_not_make_it_again(
    redis_net: Net, redis_server: RedisServer
) -> None:
    a, _ = redis_net.started("a")
    b, inbox = redis_net.started("b", inbox_ttl=0.5)
    key = inbox_key(redis_net.namespace, "b")
    client = redis_server.client()
    try:
        assert 0 < client.pttl(key) <= 500
        a.send([("b", b"hello")])
        assert inbox.wait(1) == [b"hello"]
        b.close()
        eventually(lambda: not client.exists(key), what="b's inbox to expire")
        dropped = a.stats()["dropped"]
        a.send([("b", b"to nobody")])
        eventually(lambda: a.stats()["dropped"] == dropped + 1, what="the drop counted")
        assert not client.exists(key)
    finally:
        client.close()


def test_an_inbox_is_made_again_after_redis_loses_its_data(
    redis_net: Net, redis_server: RedisServer
) -> None:
    a, _ = redis_net.started("a")
    _, inbox = redis_net.started("b", inbox_ttl=0.6)
    client = redis_server.client()
    try:
        client.flushall()

        def resent() -> bool:
            a.send([("b", b"after flush")])
            time.sleep(0.05)
            return bool(inbox.snapshot())

        eventually(resent, what="b to make its inbox again")
        assert set(inbox.snapshot()) == {b"after flush"}
    finally:
        client.close()


@pytest.mark.redis
def test_a_reader_drops_from_its_inbox_what_it_has_read(redis_net: Net) -> None:
    # Every inbox kept maxlen (10,000) messages it had already read: three nodes left
    # Redis at 285 MiB after 10^6 appends.
    a = redis_net.make("a")
    a.start(Inbox())
    _, inbox = redis_net.started("b")
    for start in range(0, 2_000, 200):
        a.send([("b", b"%d" % i) for i in range(start, start + 200)])
    inbox.wait(2_000)
    client = redis.Redis.from_url(redis_net.url)
    key = inbox_key(redis_net.namespace, "b")
    try:
        eventually(lambda: int(client.xlen(key)) < 500, what="b's inbox to be trimmed")
        assert client.exists(key)  # trimmed, not deleted: senders still reach it
    finally:
        client.close()
