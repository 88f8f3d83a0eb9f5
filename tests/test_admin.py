"""The status nodes publish to Redis, `read_cluster`, and the `conflux` command (status,
watch, log), against real node processes (tests/_nodeproc.py) over a real redis-server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _wait import wait_for

from conflux_raft import ConfigError, ConfluxRaftError, RaftNode
from conflux_raft.admin import ClusterView, Unreachable, cluster_view, main, read_cluster
from conflux_raft.admin._cli import CLEAR
from conflux_raft.testing import RedisServer, free_port
from conflux_raft.transport import status_key

HERE = Path(__file__).parent
CONFLUX = Path(sys.executable).parent / "conflux"  # the console script pyproject installs
IDS = ["n1", "n2", "n3"]
API_KEYS = {"id", "role", "term", "leader", "commit_index", "applied_index", "last_index",
            "snapshot_index", "voters", "progress", "transport"}
ROW_KEYS = {"id", "role", "term", "leader", "commit_index", "applied_index", "last_index",
            "snapshot_index", "lag", "last_heard", "connected", "dropped", "malformed",
            "voters", "progress", "tail"}


class Nodes:
    """Three node processes of one namespace, on the session's redis-server."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url, self.namespace = url, namespace
        self.procs = {
            i: subprocess.Popen(
                [sys.executable, str(HERE / "_nodeproc.py"), "--id", i, "--members",
                 ",".join(IDS), "--url", url, "--namespace", namespace, "--lifetime", "60"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for i in IDS
        }

    def tell(self, node_id: str, cmd: str) -> None:
        stdin = self.procs[node_id].stdin
        assert stdin is not None
        stdin.write(cmd.encode() + b"\n")
        stdin.flush()

    def view(self) -> ClusterView:
        return read_cluster(self.url, self.namespace)

    def settled(self, ids: list[str], min_commit: int = 0) -> ClusterView:
        """Wait until `ids` report, one of them leads, and all applied the same index."""
        seen: list[ClusterView] = []

        def ok() -> bool:
            view = self.view()
            seen[:] = [view]
            rows = view.nodes
            return ([r["id"] for r in rows] == ids
                    and sum(r["role"] == "leader" for r in rows) == 1
                    and len({(r["term"], r["commit_index"], r["applied_index"]) for r in rows}) == 1
                    and rows[0]["applied_index"] >= min_commit)

        wait_for(ok, 20, f"{ids} to settle (last seen: {seen and seen[0]})", every=0.1)
        return seen[0]

    def close(self) -> None:
        for i in self.procs:
            with contextlib.suppress(OSError, ValueError):
                self.tell(i, "quit")
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if p.stdin is not None:
                with contextlib.suppress(OSError):
                    p.stdin.close()


@pytest.fixture(scope="module")
def live(redis_server: RedisServer) -> Iterator[Nodes]:
    """Three nodes that committed a few dozen entries, then went quiet."""
    redis_server.ensure_running()
    nodes = Nodes(redis_server.url, f"admin-{uuid.uuid4().hex[:10]}")
    try:
        nodes.tell("n1", "run")
        wait_for(lambda: any(r["commit_index"] >= 30 for r in nodes.view().nodes), 20,
             "30 entries committed", every=0.1)
        nodes.tell("n1", "pause")
        nodes.settled(IDS)
        yield nodes
    finally:
        nodes.close()


def conflux(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, for real."""
    return subprocess.run([str(CONFLUX), *args], capture_output=True, text=True, timeout=30,
                          env=env, check=False)


# ---- nodes that go -------------------------------------------------------------------------

def test_a_node_that_goes_is_flagged_not_reporting(redis_url: str, namespace: str) -> None:
    nodes = Nodes(redis_url, namespace)
    try:
        nodes.settled(IDS)
        # A clean close deletes the key: gone as soon as the process has exited.
        nodes.tell("n3", "quit")
        assert nodes.procs["n3"].wait(10) == 0
        view = nodes.view()
        assert [r["id"] for r in view.nodes] == ["n1", "n2"]
        # kill -9: the key stays until it expires, then the row vanishes.
        nodes.procs["n2"].send_signal(signal.SIGKILL)
        nodes.procs["n2"].wait(5)
        wait_for(lambda: [r["id"] for r in nodes.view().nodes] == ["n1"], 15, "n2 to expire",
                 every=0.1)
        problems = nodes.view().problems
        assert any(p.startswith("n2 is not reporting") for p in problems), problems
        assert any(p.startswith("n3 is not reporting") for p in problems), problems
        out = conflux("status", "--url", redis_url, "--namespace", namespace)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert [line.split()[0] for line in lines[1:2]] == ["n1"]
        assert [line for line in lines if line.startswith("! n2 is not reporting")]
    finally:
        nodes.close()


def test_a_node_publishes_with_an_expiry_survives_redis_loss_and_deletes_on_close(
        redis_server: RedisServer, redis_url: str, namespace: str) -> None:
    node = RaftNode("solo", members=["solo"],
                    channel={"name": "redis", "url": redis_url, "namespace": namespace})
    client = redis_server.client()
    key = status_key(namespace, "solo")
    try:
        wait_for(node.is_leader, 10, "solo to lead")
        wait_for(lambda: client.exists(key) == 1, 10, "the first status")
        assert 0 < client.pttl(key) <= 5000
        published = orjson.loads(client.get(key))
        assert API_KEYS | {"published_at", "tail", "pending", "malformed"} <= set(published)
        redis_server.stop()
        # Nothing can be published; the node goes on (a single voter commits alone).
        assert node.append({"while": "down"}).result(10) >= 1
        redis_server.start()
        client.close()
        client = redis_server.client()

        def published_again() -> bool:
            raw = client.get(key)
            return raw is not None and orjson.loads(raw)["tail"][-1][2] == {"while": "down"}

        wait_for(published_again, 15, "the status once Redis is back")
    finally:
        node.close()
    assert client.exists(key) == 0
    client.close()


def test_the_memory_channel_publishes_nothing_but_status_has_the_keys() -> None:
    with RaftNode("m1", members=["m1"], channel={"name": "memory",
                                                 "namespace": uuid.uuid4().hex}) as node:
        wait_for(node.is_leader, 10, "m1 to lead")
        st = node.status()
        assert set(st) >= API_KEYS and st["role"] == "leader" and st["progress"] == {}
        assert st["transport"]["connected"] is True and st["transport"]["malformed"] == 0
        assert not [t for t in threading.enumerate()
                    if t.name == "conflux-status-m1"]


# ---- errors ----------------------------------------------------------------------------------

def test_no_redis_at_the_url_is_one_line_and_exit_1() -> None:
    port = free_port()
    out = conflux("status", "--url", f"redis://:hunter2@127.0.0.1:{port}/0", "--namespace", "x")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(f"conflux: no Redis at 127.0.0.1:{port}: ")
    assert out.stderr.count("\n") == 1 and "hunter2" not in out.stderr
    with pytest.raises(Unreachable) as caught:
        read_cluster(f"redis://127.0.0.1:{port}/0", "x", timeout=1)
    assert isinstance(caught.value, ConfluxRaftError) and isinstance(caught.value,
                                                                      ConnectionError)


def test_a_bad_url_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="url"):
        read_cluster("http://127.0.0.1:1", "x")
    assert main(["status", "--url", "http://127.0.0.1:1", "--namespace", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("conflux: url: ") and err.count("\n") == 1


def test_an_empty_namespace_is_one_line_and_exit_1(redis_url: str, namespace: str) -> None:
    view = read_cluster(redis_url, namespace)
    assert view.nodes == [] and view.members == [] and view.problems == []
    env = {**os.environ, "CONFLUX_URL": redis_url}
    for args in (["status"], ["log", "--node", "n1"], ["watch", "--count", "1"]):
        out = conflux(*args, "--namespace", namespace, env=env)
        port = redis_url.rsplit(":", 1)[1].split("/")[0]
        line = f"conflux: no node of namespace {namespace} reports to redis at 127.0.0.1:{port}"
        assert out.returncode == 1, args
        assert line + "\n" in out.stderr + out.stdout, (args, out)


# ---- the problems, on rows made by hand ------------------------------------------------------

def status(node_id: str, role: str = "follower", term: int = 3, leader: str | None = "n1",
           commit: int = 10, applied: int = 10, voters: tuple[str, ...] = ("n1", "n2", "n3"),
           published_at: float = 99.0) -> tuple[str, bytes]:
    st: dict[str, Any] = {
        "id": node_id, "role": role, "term": term, "leader": leader, "commit_index": commit,
        "applied_index": applied, "last_index": commit, "snapshot_index": 0,
        "voters": list(voters), "progress": {}, "published_at": published_at, "tail": [],
        "transport": {"connected": True, "dropped": 2, "malformed": 1},
    }
    return node_id, orjson.dumps(st)


def test_a_healthy_cluster_has_no_problem_and_rows_have_lag_and_heard() -> None:
    view = cluster_view("ns", [status("n2", applied=7, published_at=98.5),
                               status("n1", "leader"), status("n3", published_at=101.0)],
                        at=100.0)
    assert view.problems == [] and view.members == IDS
    assert [(r["id"], r["lag"], r["last_heard"]) for r in view.nodes] == [
        ("n1", 0, 1.0), ("n2", 3, 1.5), ("n3", 0, 0.0)]  # a clock ahead: 0, never < 0
    assert all(set(r) >= ROW_KEYS and (r["dropped"], r["malformed"]) == (2, 1)
               for r in view.nodes)


def test_lag_comes_from_the_leaders_one_publication() -> None:
    # Rows published at other moments made a leader look 24-100 entries behind its own
    # followers while entries flowed; the leader's match indexes are one moment's.
    leader = dict(orjson.loads(status("n1", "leader", commit=100, applied=97)[1]))
    leader["progress"] = {"n2": 90, "n3": 100}
    view = cluster_view("ns", [("n1", orjson.dumps(leader)),
                               status("n2", commit=140, applied=140),  # published later
                               status("n3", commit=60, applied=60)],  # published earlier
                        at=100.0)
    assert [(r["id"], r["lag"]) for r in view.nodes] == [("n1", 3), ("n2", 10), ("n3", 0)]


def test_two_leaders_in_one_term_are_flagged() -> None:
    view = cluster_view("ns", [status("n1", "leader"), status("n2", "leader", leader="n2"),
                               status("n3")], at=100.0)
    assert view.problems == ["n1 and n2 both claim to lead term 3: two leaders in one term"]


def test_leaders_of_different_terms_are_flagged() -> None:
    view = cluster_view("ns", [status("n1", "leader"),
                               status("n2", "leader", term=4, leader="n2"),
                               status("n3", term=4, leader="n2")], at=100.0)
    assert len(view.problems) == 1
    assert view.problems[0].startswith("n1 and n2 both claim to lead (terms 3, 4)")


def test_missing_members_and_voter_disagreements_are_flagged() -> None:
    # The member list is discovery's: the ids beyond the voters' count were refused.
    view = cluster_view("ns", [status("n1", "leader"),
                               status("n2", voters=("n1", "n2", "n4"))],
                        listed=["n1", "n2", "n3", "n9"], at=100.0)
    assert view.members == ["n1", "n2", "n3"]
    assert view.problems == [
        "n3 is not reporting (a member with no status in Redis: stopped, or cut off from "
        "Redis)",
        "nodes disagree on the voters (n1: n1, n2, n3; n2: n1, n2, n4)",
    ]


def test_no_leader_and_unreadable_statuses_are_problems_not_crashes() -> None:
    view = cluster_view("ns", [status("n1", "candidate", leader=None), ("n2", b"{not json"),
                               ("n3", b"[1, 2]")], at=100.0)
    assert [r["id"] for r in view.nodes] == ["n1"]
    assert view.problems == [
        "no node claims to lead (an election, or no quorum)",
        "n2 is not reporting (a member with no status in Redis: stopped, or cut off from "
        "Redis)",
        "n3 is not reporting (a member with no status in Redis: stopped, or cut off from "
        "Redis)",
        "n2 published something that is not a node's status",
        "n3 published something that is not a node's status",
    ]


# ---- against live nodes (last: the module's cluster starts after the tests above) ---------

def test_read_cluster_sees_every_node_one_leader_one_term(live: Nodes) -> None:
    view = live.settled(IDS)
    rows = view.nodes
    assert [r["id"] for r in rows] == IDS and view.members == IDS and view.problems == []
    leaders = [r for r in rows if r["role"] == "leader"]
    assert len(leaders) == 1 and {r["role"] for r in rows} == {"leader", "follower"}
    assert len({r["term"] for r in rows}) == 1
    assert {r["leader"] for r in rows} == {leaders[0]["id"]}
    assert set(leaders[0]["progress"]) == set(IDS) - {leaders[0]["id"]}
    for r in rows:
        assert set(r) >= ROW_KEYS and r["voters"] == IDS
        assert r["lag"] == 0 and r["connected"] is True and r["last_heard"] >= 0
        assert r["last_index"] >= r["commit_index"] >= 30
        # the tail: the last 20 committed user entries, [index, term, data], in order
        indexes = [e[0] for e in r["tail"]]
        assert len(indexes) == 20 and indexes == sorted(indexes)
        assert indexes[-1] <= r["commit_index"]
        assert all(e[2][0] == "n1" for e in r["tail"])  # _nodeproc appends [id, pid, n]
    assert len({orjson.dumps(r["tail"]) for r in rows}) == 1
    assert set(view.as_json()) == {"namespace", "at", "members", "problems", "nodes"}


def test_status_json_from_the_console_script(live: Nodes) -> None:
    out = conflux("status", "--url", live.url, "--namespace", live.namespace, "--json")
    assert out.returncode == 0, out.stderr
    rows = orjson.loads(out.stdout)
    assert [r["id"] for r in rows] == IDS
    for r in rows:
        assert set(r) >= API_KEYS | ROW_KEYS
        assert r["role"] in ("leader", "follower", "candidate", "pre-candidate")
        assert {"connected", "dropped", "malformed", "sent", "received"} <= set(r["transport"])


def test_status_table_has_a_row_per_node(live: Nodes, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONFLUX_URL", live.url)  # --url defaults to it
    assert main(["status", "--namespace", live.namespace]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["id", "role", "term", "leader", "commit", "applied", "last",
                              "snap", "lag", "heard", "redis"]
    assert [r.split()[0] for r in rows] == IDS  # and no "!" line: no problem
    cells = [r.split() for r in rows]
    assert sorted(c[1] for c in cells) == ["follower", "follower", "leader"]
    assert all(c[-1] == "ok" and c[-2].endswith("s") and c[-3] == "0" for c in cells)


def test_log_prints_the_committed_entries_a_node_published(live: Nodes) -> None:
    tail = next(r["tail"] for r in live.view().nodes if r["id"] == "n2")
    out = conflux("log", "--url", live.url, "--namespace", live.namespace, "--node", "n2",
                  "-n", "5")
    assert out.returncode == 0, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.split() == ["index", "term", "data"]
    printed = [line.split(None, 2) for line in lines]
    assert [[int(i), int(t), orjson.loads(d)] for i, t, d in printed] == tail[-5:]


def test_log_of_an_unknown_node_is_one_line(live: Nodes) -> None:
    out = conflux("log", "--url", live.url, "--namespace", live.namespace, "--node", "n9")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == (f"conflux: node n9 does not report in namespace {live.namespace} "
                          "(reporting: n1, n2, n3)\n")


def test_watch_refreshes_until_its_count(live: Nodes, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["watch", "--url", live.url, "--namespace", live.namespace, "--interval", "0.05"]
    assert main([*args, "--count", "3"]) == 0
    screens = capsys.readouterr().out.split(CLEAR)
    assert screens[0] == "" and len(screens) == 4
    for screen in screens[1:]:
        assert [line.split()[0] for line in screen.splitlines()[3:]] == IDS


def test_python_m_runs_the_command(live: Nodes) -> None:
    out = subprocess.run([sys.executable, "-m", "conflux_raft.admin", "status", "--url",
                          live.url, "--namespace", live.namespace], capture_output=True,
                         text=True, timeout=30, check=False)
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4, out.stderr


def test_watch_ends_on_ctrl_c_with_exit_0(live: Nodes) -> None:
    proc = subprocess.Popen([str(CONFLUX), "watch", "--url", live.url, "--namespace",
                             live.namespace, "--interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first screen: it is watching
        assert first.startswith(CLEAR.encode() + b"conflux watch "), first
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.communicate(timeout=10)
