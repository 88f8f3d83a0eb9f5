"""conflux_redux over a real Redis (the conftest's private redis-server): the same
promises as on the memory channel, with nodes in this process and in separate ones."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_redux import (
    WAIT,
    Cluster,
    Sold,
    counter_reducer,
    lost_updates,
    perform_incr,
    read_then_set,
    wait_for,
)

from conflux_redux import ClosedError, RemoteError, perform_action

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REDIS_OPTS: dict[str, Any] = {"election_timeout": (0.3, 0.6), "heartbeat_interval": 0.05}


def redis_cluster(url: str, namespace: str, **opts: Any) -> Cluster:
    return Cluster(namespace, channel={"name": "redis", "url": url}, **{**REDIS_OPTS, **opts})


@pytest.fixture
def rcluster(redis_url: str, namespace: str) -> Iterator[Cluster]:
    c = redis_cluster(redis_url, namespace)
    yield c
    c.assert_replicas_equal()
    c.close()


def test_dispatch_perform_and_listeners_over_redis(rcluster: Cluster) -> None:
    heard: dict[str, int] = {s.node.id: 0 for s in rcluster.stores}

    def count(node_id: str) -> Any:
        return lambda: heard.__setitem__(node_id, heard[node_id] + 1)

    for s in rcluster.stores:
        s.subscribe(count(s.node.id))
    for s in rcluster.stores:
        assert s.dispatch({"type": "append", "item": f"d-{s.node.id}"}).result(WAIT)
        assert f"d-{s.node.id}" in s.get_state()
        assert s.perform("append", [f"p-{s.node.id}"]).result(WAIT)["item"] == f"p-{s.node.id}"
        assert s.dispatch(perform_action("noop")).result(WAIT) is None
    state = rcluster.assert_replicas_equal()
    assert sorted(state) == sorted(f"{k}-n{i}" for k in "dp" for i in range(3))
    wait_for(lambda: all(v == 6 for v in heard.values()), what="6 listener calls per node")


def test_method_errors_cross_redis(rcluster: Cluster) -> None:
    follower = rcluster.followers()[0]
    err = follower.perform("return_error").exception(WAIT)
    assert type(err) is ValueError
    err = follower.perform("sold").exception(WAIT)
    assert isinstance(err, RemoteError) and err.type_name == "Sold"
    with pytest.raises(Sold):
        rcluster.leader().perform("sold").result(WAIT)
    with pytest.raises(KeyError):
        follower.perform("nope").result(WAIT)
    follower.perform("append", ["one"]).result(WAIT)
    with pytest.raises(ValueError, match="already there"):
        follower.perform("append_unique", ["one"]).result(WAIT)
    with pytest.raises(ValueError, match="boom"):  # the reducer's error, from the log
        follower.dispatch({"type": "boom", "n": 2}).result(WAIT)
    assert rcluster.assert_replicas_equal() == ["one"]


def test_no_lost_updates_over_redis(redis_url: str, namespace: str) -> None:
    c = redis_cluster(redis_url, namespace, reducer=counter_reducer)
    try:
        assert lost_updates(c, perform_incr, threads_per_node=2, per_thread=6) == 0
        assert lost_updates(c, perform_incr, threads_per_node=2, per_thread=3,
                            barrier_rounds=True) == 0
    finally:
        c.close()


def test_the_detector_catches_lost_updates_over_redis(redis_url: str, namespace: str) -> None:
    c = redis_cluster(redis_url, namespace, reducer=counter_reducer)
    try:
        assert lost_updates(c, read_then_set, threads_per_node=2, per_thread=3,
                            barrier_rounds=True) > 0
    finally:
        c.close()


def test_leader_close_and_redis_restart_lose_nothing(
    redis_url: str, redis_server: Any, namespace: str
) -> None:
    c = redis_cluster(redis_url, namespace)
    try:
        leader = c.leader()
        survivor = next(s for s in c.stores if s is not leader)
        leader.close(5)
        with pytest.raises(ClosedError):
            leader.dispatch({"type": "append", "item": "late"})
        assert survivor.dispatch({"type": "append", "item": "after-close"}).result(WAIT)
        redis_server.stop()
        pending = survivor.dispatch({"type": "append", "item": "during-outage"})
        redis_server.start()
        assert pending.result(3 * WAIT) == {"type": "append", "item": "during-outage"}
        assert c.assert_replicas_equal() == ["after-close", "during-outage"]
    finally:
        c.close()


def test_todo_example_nodes_in_separate_processes(redis_url: str, namespace: str) -> None:
    ids = ["a", "b", "c"]
    procs = [
        subprocess.Popen(
            [sys.executable, str(EXAMPLES / "todo.py"), "--redis", redis_url, "--id", i,
             "--members", ",".join(ids), "--namespace", namespace, "--add", f"from {i}",
             "--add", "shared", "--until", "4", "--timeout", str(3 * WAIT)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in ids
    ]
    outs: list[tuple[str, str]] = []
    def kill_all() -> None:
        for p in procs:
            p.kill()

    timer = threading.Timer(6 * WAIT, kill_all)
    timer.start()
    try:
        outs = [p.communicate() for p in procs]
    finally:
        timer.cancel()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    states = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert states[0] == states[1] == states[2]
    texts = sorted(t["text"] for t in states[0]["todos"])
    assert texts == ["from a", "from b", "from c", "shared"]  # "shared" added once
    assert sorted(t["id"] for t in states[0]["todos"]) == [1, 2, 3, 4]  # no id collides
    refusals = sum(out.count("already on the list") for out, _ in outs)
    assert refusals == 2
