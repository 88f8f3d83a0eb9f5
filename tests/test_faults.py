"""Real faults against real processes and a real redis-server: kill -9, SIGSTOP, Redis
restarts, garbage in the inboxes. Each node runs tests/_nodeproc.py in its own process."""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

HERE = Path(__file__).parent


class Proc:
    """A node process and what it has printed."""

    def __init__(self, node_id: str, members: list[str], url: str, namespace: str,
                 *extra: str) -> None:
        self.id = node_id
        self.p = subprocess.Popen(
            [sys.executable, str(HERE / "_nodeproc.py"), "--id", node_id, "--members",
             ",".join(members), "--url", url, "--namespace", namespace, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self.commits: dict[int, Any] = {}
        self.acks: list[tuple[int, Any]] = []
        self.leaders: list[tuple[float, str, int]] = []
        self.statuses: list[dict[str, Any]] = []
        self.states: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            ev = orjson.loads(line)
            with self.lock:
                kind = ev["ev"]
                if kind == "commit":
                    self.commits[ev["index"]] = ev["data"]
                elif kind == "ack":
                    self.acks.append((ev["index"], ev["data"]))
                elif kind == "leader":
                    self.leaders.append((time.monotonic(), ev["leader"], ev["term"]))
                elif kind == "status":
                    self.statuses.append(ev)
                elif kind == "state":
                    self.states.append(ev)
                elif kind == "ready":
                    self.ready.set()

    def tell(self, cmd: str) -> None:
        assert self.p.stdin is not None
        try:
            self.p.stdin.write(cmd.encode() + b"\n")
            self.p.stdin.flush()
        except (OSError, ValueError):  # the process or its pipe is gone
            pass

    @property
    def leader(self) -> str | None:
        with self.lock:
            return self.leaders[-1][1] if self.leaders else None

    def n_acks(self) -> int:
        with self.lock:
            return len(self.acks)

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self) -> None:
        self.kill(signal.SIGCONT)
        self.tell("quit")
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.kill()
            self.p.wait(5)
        self.reader.join(5)
        for pipe in (self.p.stdin, self.p.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def cluster(redis_url: str, namespace: str, tmp_path: Path) -> Iterator[Callable[..., list[Proc]]]:
    procs: list[Proc] = []

    def start(n: int = 3, *extra: str, durable: bool = False) -> list[Proc]:
        ids = [f"p{i}" for i in range(n)]
        for i in ids:
            more = [*extra, "--storage", str(tmp_path / i)] if durable else list(extra)
            procs.append(Proc(i, ids, redis_url, namespace, *more))
        for p in procs:
            assert p.ready.wait(30), "node process did not start"
        return procs

    yield start
    for p in procs:
        p.stop()


def more_acks(procs: list[Proc], n: int, what: str, timeout: float = 30) -> None:
    """Wait until each of `procs` has had more than `n` more appends acknowledged."""
    before = [p.n_acks() for p in procs]
    wait_for(lambda: all(p.n_acks() > b + n for p, b in zip(procs, before, strict=True)),
             timeout, what)


def agreed_leader(procs: list[Proc], exclude: str | None = None) -> str:
    """Wait until every live process names the same leader (other than `exclude`)."""
    live = [p for p in procs if p.alive()]
    wait_for(lambda: len({p.leader for p in live}) == 1 and live[0].leader not in (None, exclude),
             20, "an agreed leader")
    leader = live[0].leader
    assert leader is not None
    return leader


def check_agreement(procs: list[Proc], survivors: list[Proc]) -> None:
    """Every acknowledged append is committed on every survivor, at its acknowledged index,
    and no two processes applied different entries at the same index. Call it once the
    processes stopped appending (in-flight appends may still be acknowledged)."""

    def top() -> int:
        marks = [0]
        for p in procs:
            with p.lock:
                marks += [i for i, _ in p.acks[-1:]]
                if p in survivors:
                    marks.append(max(p.commits, default=0))
        return max(marks)

    target = -1
    while target != (target := top()):
        wait_for(lambda: all(max(p.commits, default=0) >= target for p in survivors), 20,
                 "survivors to converge")
        time.sleep(0.3)
    for p in procs:
        with p.lock:
            acks = list(p.acks)
        for index, data in acks:
            for s in survivors:
                assert s.commits.get(index) == data, (p.id, index, data, s.id)
    merged: dict[int, Any] = {}
    for p in procs:
        with p.lock:
            for index, data in p.commits.items():
                assert merged.setdefault(index, data) == data, f"divergence at {index}"


def test_three_and_five_process_clusters_replicate(cluster: Callable[..., list[Proc]]) -> None:
    procs = cluster(5)
    agreed_leader(procs)
    for p in procs:
        p.tell("run")
    more_acks(procs, 20, "appends from every node")
    for p in procs:
        p.tell("pause")
    check_agreement(procs, procs)


def test_kill9_of_the_leader(cluster: Callable[..., list[Proc]]) -> None:
    procs = cluster(3, durable=True)
    leader = agreed_leader(procs)
    for p in procs:
        p.tell("run")
    more_acks(procs, 10, "appends before the kill")
    victim = next(p for p in procs if p.id == leader)
    rest = [p for p in procs if p is not victim]
    killed_at = time.monotonic()
    victim.kill()
    new = agreed_leader(rest, exclude=leader)
    elected_at = min(t for p in rest for t, lid, _ in p.leaders if lid == new and t > killed_at)
    print(f"\nkill -9 of the leader -> new leader {new} after {elected_at - killed_at:.3f} s")
    more_acks(rest, 10, "appends after the kill", 30)
    for p in rest:
        p.tell("pause")
    check_agreement(procs, rest)


def test_sigstop_of_the_leader(cluster: Callable[..., list[Proc]]) -> None:
    procs = cluster(3)
    leader = agreed_leader(procs)
    for p in procs:
        p.tell("run")
    more_acks(procs, 10, "appends before the pause")
    old = next(p for p in procs if p.id == leader)
    rest = [p for p in procs if p is not old]
    old.kill(signal.SIGSTOP)
    try:
        new = agreed_leader(rest, exclude=leader)
        more_acks(rest, 10, "appends while the old leader is paused")
    finally:
        old.kill(signal.SIGCONT)
    wait_for(lambda: old.leader == new, 20, "the old leader to follow the new one")
    more_acks([old], 5, "the old leader's appends to commit again")
    for p in procs:
        p.tell("pause")
    check_agreement(procs, procs)


def test_redis_restart_the_cluster_resumes(cluster: Callable[..., list[Proc]],
                                           redis_server: Any) -> None:
    procs = cluster(3)
    agreed_leader(procs)
    for p in procs:
        p.tell("run")
    more_acks(procs, 10, "appends before the outage")
    redis_server.stop()
    time.sleep(3)
    redis_server.start()
    more_acks(procs, 10, "appends after Redis came back", 60)
    for p in procs:
        p.tell("pause")
    assert all(p.alive() for p in procs)
    check_agreement(procs, procs)


def test_garbage_in_the_inboxes(cluster: Callable[..., list[Proc]], redis_server: Any,
                                namespace: str) -> None:
    procs = cluster(3)
    agreed_leader(procs)
    for p in procs:
        p.tell("run")
    r = redis_server.client()
    garbage = [b"", b"\x00\xff", b"U[1,2,3]", b"S" + b"x" * 40, b'U[1,5,"p0","p1"]',
               orjson.dumps({"m": 1}), b"U" + b"[" * 1000]
    try:
        for k in range(10_000):
            pipe = r.pipeline(transaction=False)
            target = f"conflux:{{{namespace}}}:inbox:p{k % 3}"
            pipe.xadd(target, {"m": garbage[k % len(garbage)]})
            if k % 7 == 0:
                pipe.xadd(target, {"junk": b"no m field"})
            pipe.execute()
    finally:
        r.close()
    more_acks(procs, 10, "appends after the garbage", 30)
    for p in procs:
        p.tell("pause")
        p.tell("status")
    wait_for(lambda: all(p.statuses for p in procs), 10, "statuses")
    assert all(p.alive() for p in procs)
    assert sum(p.statuses[-1]["malformed"] for p in procs) >= 10_000
    check_agreement(procs, procs)


@pytest.mark.skipif(not os.environ.get("CONFLUX_SOAK"), reason="set CONFLUX_SOAK=1")
def test_kill9_failover_time_soak(cluster: Callable[..., list[Proc]], redis_url: str,
                                  namespace: str, tmp_path: Path) -> None:
    """Median time from kill -9 of the leader to a new leader, over ten rounds; each
    victim restarts from its durable storage before the next round."""
    procs = cluster(3, durable=True)
    ids = [p.id for p in procs]
    times = []
    for _ in range(10):
        leader = agreed_leader(procs)
        victim = next(p for p in procs if p.id == leader)
        t0 = time.monotonic()
        victim.kill()
        victim.p.wait(5)
        rest = [p for p in procs if p is not victim]
        new = agreed_leader(rest, exclude=leader)
        times.append(min(t for p in rest for t, lid, _ in p.leaders if lid == new and t > t0)
                     - t0)
        victim.stop()
        back = Proc(victim.id, ids, redis_url, namespace, "--storage", str(tmp_path / victim.id))
        assert back.ready.wait(30)
        procs[procs.index(victim)] = back
        wait_for(lambda b=back, n=new: b.leader == n, 20, "the restarted node to follow")
    print(f"\nkill -9 -> new leader: median {statistics.median(times):.3f} s, "
          f"min {min(times):.3f}, max {max(times):.3f} over {len(times)} rounds")
    for p in procs:
        p.stop()


def snapshot_kill_cycles(redis_url: str, namespace: str, tmp_path: Path, cycles: int,
                         seed: int) -> None:
    """Three nodes on file storage that snapshot every 40 entries, appending while a
    random node, or all three at once, is killed with -9 and restarted; once, a node's
    directory is wiped first and it rejoins through a snapshot. At the end every
    acknowledged append is in every state exactly once, and the states agree."""
    import random
    import shutil

    rng = random.Random(seed)
    ids = ["s0", "s1", "s2"]

    def start(node_id: str) -> Proc:
        p = Proc(node_id, ids, redis_url, namespace, "--storage", str(tmp_path / node_id),
                 "--snapshot-every", "40")
        assert p.ready.wait(30), "node process did not start"
        p.tell("run")
        return p

    live = {i: start(i) for i in ids}
    every = list(live.values())  # every incarnation, for its acknowledged appends
    wiped, killed = "", 0
    try:
        for cycle in range(cycles):
            time.sleep(rng.uniform(0.3, 1.2))
            if cycle == cycles // 2:  # a stable cluster; one node loses its directory
                wiped = rng.choice(ids)
                victims = [wiped]
            else:
                victims = ids if rng.random() < 0.25 else [rng.choice(ids)]
            for i in victims:
                live[i].kill()
                live[i].p.wait(5)
                killed += 1
            for i in victims:
                live[i].stop()
                if i == wiped and cycle == cycles // 2:
                    shutil.rmtree(tmp_path / i)
                live[i] = start(i)
                every.append(live[i])
        more_acks(list(live.values()), 20, "appends after the last restart")
        for p in live.values():
            p.tell("pause")
        time.sleep(1.0)  # appends in flight are answered
        acked = [data for p in every for _, data in list(p.acks)]

        def states() -> list[list[Any]]:
            for p in live.values():
                p.tell("state")
            time.sleep(0.3)
            return [p.states[-1]["values"] for p in live.values() if p.states]

        wait_for(lambda: len(s := states()) == 3 and s[0] == s[1] == s[2]
                 and len(s[0]) >= len(acked), 30, "the states to agree")
        final = live[ids[0]].states[-1]
        values = [tuple(v) for v in final["values"]]
        assert len(values) == len(set(values)), "an append was applied twice"
        missing = {tuple(d) for d in acked} - set(values)
        assert not missing, f"acknowledged appends lost: {sorted(missing)[:5]}"
        restored = live[wiped].states[-1]
        assert restored["snapshot_index"] > 0
        print(f"\nseed {seed}: {cycles} cycles, {killed} kill -9s, node {wiped} wiped; "
              f"{len(acked)} appends acknowledged, 0 lost, {len(values)} applied; "
              f"snapshot index {final['snapshot_index']}, last index {final['last_index']}")
    finally:
        for p in live.values():
            p.stop()


def test_kill9_and_restart_with_snapshots(redis_url: str, namespace: str,
                                          tmp_path: Path) -> None:
    snapshot_kill_cycles(redis_url, namespace, tmp_path, cycles=8,
                         seed=int(os.environ.get("CONFLUX_KILL_SEED", "1")))


@pytest.mark.skipif(not os.environ.get("CONFLUX_SOAK"), reason="set CONFLUX_SOAK=1")
def test_kill9_and_restart_with_snapshots_soak(redis_url: str, namespace: str,
                                               tmp_path: Path) -> None:
    snapshot_kill_cycles(redis_url, namespace, tmp_path, cycles=60,
                         seed=int(os.environ.get("CONFLUX_KILL_SEED", "2")))
