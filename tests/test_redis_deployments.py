"""Redis as users run it: behind Sentinel (and through a failover), as a one-node Redis
Cluster, and as an ACL user limited to its namespace's keys. Every server here is a real
redis-server (the one the tests find), started and stopped by PID."""

from __future__ import annotations

import select
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from _wait import wait_for
from conftest import RedisServer, find_redis_server

from conflux_raft import ConfigError, RaftNode
from conflux_raft.admin import read_cluster
from conflux_raft.testing import answers_ping, free_port
from conflux_raft.transport import RedisTransport

FAST = {"election_timeout": (0.2, 0.4), "heartbeat_interval": 0.04}


class Proc:
    """One redis-server (or sentinel) process on 127.0.0.1:`port`, ended by PID."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.port = port
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([find_redis_server(), *args], stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.log = log
        wait_for(self.ping, 10, f"redis-server on port {port} ({log})")

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           socket_connect_timeout=1, **kwargs)

    def ping(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        return answers_ping(self.port)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*args: str, port: int | None = None, config: str | None = None) -> Proc:
        port = port or free_port()
        name = f"{len(procs)}-{port}"
        head: list[str] = []
        if config is not None:  # a sentinel rewrites its config file: one of its own
            path = tmp_path / f"{name}.conf"
            path.write_text(config.format(port=port, dir=tmp_path))
            head = [str(path)]
        proc = Proc([*head, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(tmp_path), *args],
                    port, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()


SENTINEL_CONF = """\
sentinel monitor mymaster 127.0.0.1 {master} 1
sentinel down-after-milliseconds mymaster 400
sentinel failover-timeout mymaster 5000
"""


def sentinel_of(spawn: Callable[..., Proc], master: Proc) -> Proc:
    conf = SENTINEL_CONF.replace("{master}", str(master.port))
    sentinel = spawn("--sentinel", config=conf)
    wait_for(lambda: master_port(sentinel) == master.port, 10, "the sentinel to see the master")
    return sentinel


def master_port(sentinel: Proc) -> int | None:
    client = sentinel.client()
    try:
        addr = client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
    except redis.RedisError:
        return None
    finally:
        client.close()
    return int(addr[1]) if addr else None


def cluster_of(url: str, namespace: str, n: int = 3, *, discover: bool = False,
               ) -> tuple[list[RaftNode], dict[str, list[Any]]]:
    """`n` started nodes; with `discover`, they find each other by cluster_size (discovery's
    scripts then run on that Redis too)."""
    ids = [f"n{i}" for i in range(n)]
    logs: dict[str, list[Any]] = {i: [] for i in ids}
    nodes = []
    for i in ids:
        voters: dict[str, Any] = {"cluster_size": n} if discover else {"members": ids}
        node = RaftNode(id=i, autostart=False, **voters,
                        channel={"name": "redis", "url": url, "namespace": namespace}, **FAST)
        node.on("committed", lambda data, index, log=logs[i]: log.append((index, data)))
        node.start()
        nodes.append(node)
    return nodes, logs


def all_hold(logs: dict[str, list[Any]], items: list[Any]) -> bool:
    return all([d for _, d in log] == items for log in logs.values())


def append_all(nodes: list[RaftNode], items: list[Any]) -> None:
    for k, item in enumerate(items):
        nodes[k % len(nodes)].append(item, timeout=20).result(25)


# ---- Sentinel ----------------------------------------------------------------------------

def test_a_cluster_runs_through_a_sentinel_url(spawn: Callable[..., Proc], namespace: str) -> None:
    master = spawn()
    sentinel = sentinel_of(spawn, master)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
    nodes, logs = cluster_of(url, namespace, discover=True)
    try:
        assert "the master of 'mymaster' (sentinels 127.0.0.1:" in repr(nodes[0]._loop.transport)
        items = [{"k": k} for k in range(6)]
        append_all(nodes, items)
        wait_for(lambda: all_hold(logs, items), 20, "every node to commit every item")
        client = master.client()  # the messages went through the master the sentinel named
        assert client.exists(f"conflux:{{{namespace}}}:inbox:n0")
        client.close()
    finally:
        for node in nodes:
            node.close()


def test_the_cluster_follows_a_sentinel_failover(spawn: Callable[..., Proc],
                                                 namespace: str) -> None:
    master = spawn()
    replica = spawn("--replicaof", "127.0.0.1", str(master.port))
    sentinel = sentinel_of(spawn, master)
    url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster"
    nodes, logs = cluster_of(url, namespace)
    try:
        before = [{"k": k} for k in range(3)]
        append_all(nodes, before)
        wait_for(lambda: all_hold(logs, before), 20, "the first items on every node")
        master.kill()
        wait_for(lambda: master_port(sentinel) == replica.port, 30,
                 "the sentinel to promote the replica")
        after = [{"k": k} for k in range(3, 6)]
        append_all(nodes, after)
        wait_for(lambda: all_hold(logs, before + after), 20, "every item on every node")
        # The old master is dead and a replica refuses writes: these commits went through
        # the promoted one.
        client = replica.client()
        assert client.info("replication")["role"] == "master"
        client.close()
    finally:
        for node in nodes:
            node.close()


@pytest.mark.parametrize(("url", "says"), [
    ("redis+sentinel://127.0.0.1:26379", "/service[/db] is required"),
    ("redis+sentinel://127.0.0.1:26379/mymaster/x", "/service[/db] is required"),
    ("redis+sentinel://127.0.0.1:port/mymaster", "a sentinel must be host[:port]"),
    ("redis+sentinel://127.0.0.1:26379/mymaster?db=1", "takes no options"),
    ("rediss+sentinel://127.0.0.1:26379/mymaster", "TLS through Sentinel"),
])
def test_a_bad_sentinel_url_is_a_config_error(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match="url: .*" + says.replace("[", r"\[").replace(
            "]", r"\]").replace("?", r"\?")):
        RedisTransport("a", url, "ns")


def test_a_sentinel_url_gives_credentials_and_db_to_the_master() -> None:
    t = RedisTransport("a", "redis+sentinel://u%40x:p%2Fw@h1:1,[::1]:2,h3/svc/4", "ns")
    try:
        pool = t._writer.connection_pool
        assert pool.connection_kwargs["username"] == "u@x"
        assert pool.connection_kwargs["password"] == "p/w"
        assert pool.connection_kwargs["db"] == 4
        assert "p/w" not in repr(t)
        sentinels = t._writer.sentinels.sentinels  # type: ignore[attr-defined]
        where = [(s.connection_pool.connection_kwargs["host"],
                  s.connection_pool.connection_kwargs["port"]) for s in sentinels]
        assert where == [("h1", 1), ("::1", 2), ("h3", 26379)]
        assert all(s.connection_pool.connection_kwargs.get("password") is None for s in sentinels)
    finally:
        t.close()


# ---- Redis Cluster -----------------------------------------------------------------------

def cluster_port() -> int:
    """A free port at most 55535 whose cluster bus port (+10000) is free too."""
    for _ in range(1000):
        port = free_port()
        if port <= 55535:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair for a cluster node")


def cluster_nodes(spawn: Callable[..., Proc], n: int) -> list[Proc]:
    return [spawn("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{k}.conf",
                  port=cluster_port()) for k in range(n)]


def cluster_ok(node: Proc) -> bool:
    client = node.client()
    try:
        info = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    text = info.decode() if isinstance(info, bytes) else str(info)
    return "cluster_state:ok" in text


def test_a_one_node_redis_cluster_works_with_a_plain_url(spawn: Callable[..., Proc],
                                                         namespace: str) -> None:
    (node,) = cluster_nodes(spawn, 1)
    client = node.client()
    client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))  # 6.2 has no ADDSLOTSRANGE
    wait_for(lambda: cluster_ok(node), 10, "the cluster to be ok")
    nodes, logs = cluster_of(f"redis://127.0.0.1:{node.port}", namespace)
    try:
        items = [{"k": k} for k in range(6)]
        append_all(nodes, items)
        wait_for(lambda: all_hold(logs, items), 20, "every node to commit every item")
        keys = client.keys(f"conflux:{{{namespace}}}:*")
        assert len({client.execute_command("CLUSTER", "KEYSLOT", k) for k in keys}) == 1
    finally:
        for n in nodes:
            n.close()
        client.close()


def test_moved_is_followed_to_the_node_holding_the_slot_through_a_reshard(
        spawn: Callable[..., Proc], namespace: str) -> None:
    a, b = cluster_nodes(spawn, 2)
    ca, cb = a.client(), b.client()
    ids = {p.port: c.execute_command("CLUSTER", "MYID").decode() for p, c in ((a, ca), (b, cb))}
    ca.execute_command("CLUSTER", "ADDSLOTS", *range(16384))  # a holds every slot, b none
    ca.execute_command("CLUSTER", "MEET", "127.0.0.1", b.port)
    slot = ca.execute_command("CLUSTER", "KEYSLOT", f"conflux:{{{namespace}}}:members")

    def b_redirects() -> bool:
        try:
            cb.get(f"conflux:{{{namespace}}}:x")
        except redis.exceptions.MovedError:
            return True
        except redis.RedisError:
            return False
        return False

    wait_for(lambda: cluster_ok(a) and cluster_ok(b) and b_redirects(), 20, "a 2-node cluster")
    nodes, logs = cluster_of(f"redis://127.0.0.1:{b.port}/0", namespace,  # b holds nothing
                             discover=True)
    try:
        before = [{"k": k} for k in range(3)]
        append_all(nodes, before)
        wait_for(lambda: all_hold(logs, before), 20, "the first items through b's MOVED")
        assert ca.exists(f"conflux:{{{namespace}}}:inbox:n0") and not cb.dbsize()
        # Reshard: move the namespace's slot from a to b, keys and all.
        cb.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[a.port])
        ca.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[b.port])
        while keys := ca.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            ca.execute_command("MIGRATE", "127.0.0.1", b.port, "", 0, 5000, "KEYS", *keys)
        for client in (cb, ca):
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[b.port])
        after = [{"k": k} for k in range(3, 6)]
        append_all(nodes, after)
        wait_for(lambda: all_hold(logs, before + after), 20, "every item after the reshard")
        assert cb.exists(f"conflux:{{{namespace}}}:inbox:n0") and not ca.dbsize()
    finally:
        for node in nodes:
            node.close()
        ca.close()
        cb.close()


# ---- TLS -----------------------------------------------------------------------------------

class TlsProxy:
    """TLS on 127.0.0.1:`port` in front of a plain Redis (the redis-server the tests find
    may be built without TLS): each connection gets a thread that pumps both ways."""

    def __init__(self, target_port: int, cert: Path, key: Path) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # accept() looks at `stop` this often
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            thread = threading.Thread(target=self._pump, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _pump(self, conn: socket.socket) -> None:
        try:
            with self.ctx.wrap_socket(conn, server_side=True) as tls, \
                    socket.create_connection(("127.0.0.1", self.target_port)) as up:
                while not self.stop.is_set():
                    ready, _, _ = select.select([tls, up], [], [], 0.1)
                    for sock in ready:
                        data = sock.recv(65536)
                        if not data:
                            return
                        (up if sock is tls else tls).sendall(data)
                    while tls.pending():  # decrypted bytes select cannot see
                        up.sendall(tls.recv(65536))
        except (OSError, ssl.SSLError):
            return

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(5)
        self.listener.close()


def test_a_cluster_runs_over_tls_with_a_rediss_url(redis_url: str, namespace: str,
                                                  tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    proxy = TlsProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]), cert, key)
    try:
        url = f"rediss://127.0.0.1:{proxy.port}/0?ssl_ca_certs={cert}"
        nodes, logs = cluster_of(url, namespace, discover=True)
        try:
            items = [{"k": k} for k in range(6)]
            append_all(nodes, items)
            wait_for(lambda: all_hold(logs, items), 20, "every node to commit every item")
        finally:
            for node in nodes:
                node.close()
        unverified = redis.Redis.from_url(f"rediss://127.0.0.1:{proxy.port}/0",
                                          socket_timeout=5)  # the certificate is checked
        with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            unverified.ping()
        unverified.close()
    finally:
        proxy.close()


# ---- an ACL user limited to one namespace -------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def acl_setuser(user: str, namespace: str) -> list[str]:
    """The README's `redis-cli ACL SETUSER conflux-todo ...` line, for `user` and
    `namespace` (its password stays `change-me`)."""
    line = next(line for line in README.read_text().splitlines()
                if line.startswith("redis-cli ACL SETUSER conflux-todo "))
    return [arg.replace("conflux-todo", user).replace("{todo}", f"{{{namespace}}}")
            for arg in shlex.split(line)[1:]]


def test_an_acl_user_limited_to_its_namespace_runs_a_cluster(
        redis_server: RedisServer, redis_url: str, namespace: str) -> None:
    admin = redis.Redis.from_url(redis_url)
    user = f"conflux-{namespace}"
    admin.execute_command(*acl_setuser(user, namespace))
    url = redis_url.replace("redis://", f"redis://{user}:change-me@")
    nodes: list[RaftNode] = []
    try:
        ids = ["a", "b", "c"]
        logs: dict[str, list[Any]] = {i: [] for i in ids}
        for i in ids:  # cluster_size: discovery's scripts run as that user too
            node = RaftNode(id=i, cluster_size=3, autostart=False,
                            channel={"name": "redis", "url": url, "namespace": namespace}, **FAST)
            node.on("committed", lambda data, index, log=logs[i]: log.append((index, data)))
            node.start()
            nodes.append(node)
        items = [{"k": k} for k in range(6)]
        append_all(nodes, items)
        wait_for(lambda: all_hold(logs, items), 20, "every node to commit every item")
        wait_for(lambda: all(cast(RedisTransport, n._loop.transport).health() is None
                             for n in nodes), 5, "every transport to be healthy")
        # what `conflux status` reads, as that user: every node reports, none is missing
        wait_for(lambda: len(read_cluster(url, namespace).nodes) == 3, 5, "three reports")
        assert sorted(read_cluster(url, namespace).members) == ids
        limited = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.set("conflux:{other}:members", b"x")  # another namespace: refused
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.flushall()
        limited.close()
    finally:
        for node in nodes:
            node.close()
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()
