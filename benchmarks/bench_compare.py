"""Conflux against PySyncObj, side by side: every node a process of its own, one machine,
one run, the systems alternated round by round.

Conflux runs conflux_redux stores over a private redis-server that this script starts
and ends, with their default options; PySyncObj runs its own TCP transport on 127.0.0.1,
with appendEntriesUseBatch off for the latency scenarios and on (its default) for the
others: each scenario meets PySyncObj at its best.
Both replicate the same state machine (benchmarks/_peer.py). Scenarios, per round:

  (a) sequential from the leader, one call at a time: latency p50
  (b) pipelined from the leader, --window in flight: throughput
  (c) every node pipelined at once, --all-window in flight each: throughput in all
  (d) sequential from a follower, one call at a time: latency p50
  (e), (f) linearizable reads, one at a time, on the leader and on a follower: latency
      p50 (Conflux: store.read, ReadIndex; PySyncObj has none: a replicated call that
      returns the value, its log's round trip)
  (g) linearizable reads pipelined from a follower: throughput
  conflux only: store.dispatch against RaftNode.append, pipelined, leader and follower
  idle CPU of the cluster (nodes, and redis-server), resident memory per node
  with --five: (a), (b), (d), (e) and (f) on 5 nodes

At the end of each system's turn every replica must hold the same count and hash.
Medians over the rounds, and the ratio per round (>1: Conflux is better).

    .venv/bin/pip install -q -e '.[test,bench]'
    .venv/bin/python benchmarks/bench_compare.py --rounds 3 --five
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from conflux_raft.testing import RedisServer, find_redis_server, free_port

PEER = str(Path(__file__).with_name("_peer.py"))
SYSTEMS = ("conflux", "pysyncobj")
CLK_TCK = os.sysconf("SC_CLK_TCK")
WAIT = 30.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Peer:
    """One node process, spoken to in JSON lines."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen([sys.executable, PEER, *argv], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        if self.recv().get("ready") is not True:
            raise RuntimeError(f"peer {argv} did not start")

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"peer {self.proc.pid} exited ({self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return self.recv()

    def close(self) -> None:
        try:
            self.send(cmd="quit")
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


class Cluster:
    """`n` peers of `system`; conflux ones on `url`."""

    def __init__(self, system: str, n: int, url: str, batch: str = "on",
                 profile: str = "") -> None:
        if system == "conflux":
            ids = [f"p{i}" for i in range(n)]
            ns = f"bench-{uuid.uuid4().hex[:8]}"
            argvs = [["conflux", "--id", i, "--members", ",".join(ids), "--url", url,
                      "--namespace", ns] for i in ids]
        else:
            ids = [f"127.0.0.1:{free_port()}" for _ in range(n)]
            argvs = [["pysyncobj", "--id", i, "--members", ",".join(ids), "--batch", batch]
                     for i in ids]
        if profile:  # each peer writes <profile>.<index>.pstats as it quits
            argvs = [[*argv, "--profile", f"{profile}.{i}.pstats"]
                     for i, argv in enumerate(argvs)]
        self.peers = [Peer(argv) for argv in argvs]
        self.base = 0
        self.leader, self.followers = self._roles()

    def _roles(self) -> tuple[Peer, list[Peer]]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            roles = [p.ask(cmd="role") for p in self.peers]
            known = {r["leader_id"] for r in roles}
            if sum(r["leader"] for r in roles) == 1 and len(known) == 1 and None not in known:
                leader = next(p for p, r in zip(self.peers, roles, strict=True) if r["leader"])
                return leader, [p for p in self.peers if p is not leader]
            time.sleep(0.05)
        raise RuntimeError("no leader elected")

    def values(self, n: int) -> int:
        """A base for the next n values, so that every value differs."""
        base, self.base = self.base, self.base + n
        return base

    def seq(self, peer: Peer, n: int, via: str = "append") -> dict[str, Any]:
        return peer.ask(cmd="seq", n=n, base=self.values(n), via=via, limit=WAIT)

    def pipe(self, peer: Peer, n: int, window: int, via: str = "append") -> dict[str, Any]:
        return peer.ask(cmd="pipe", n=n, window=window, base=self.values(n), via=via,
                        limit=WAIT)

    def pipe_all(self, n: int, window: int) -> float:
        for p in self.peers:
            p.send(cmd="pipe", n=n, window=window, base=self.values(n), via="append",
                   limit=WAIT)
        replies = [p.recv() for p in self.peers]
        span = max(r["end"] for r in replies) - min(r["start"] for r in replies)
        return sum(r["ops"] for r in replies) / span

    def agree(self) -> list[int]:
        """Wait until every replica holds the same state; return it."""
        deadline = time.monotonic() + WAIT
        while True:
            states = [tuple(p.ask(cmd="state")["state"]) for p in self.peers]
            if len(set(states)) == 1:
                return list(states[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"replicas disagree: {states}")
            time.sleep(0.1)

    def close(self) -> None:
        for p in self.peers:
            p.close()


def rate(r: dict[str, Any]) -> float:
    return float(r["ops"]) / float(r["seconds"])


def latency(c: Cluster, a: argparse.Namespace, prefix: str = "") -> dict[str, float]:
    return {
        f"{prefix}(a) leader, sequential p50 (ms)": 1000 * c.seq(c.leader, a.seq)["p50"],
        f"{prefix}(d) follower, sequential p50 (ms)": 1000 * c.seq(c.followers[0],
                                                                  a.seq)["p50"],
        f"{prefix}(e) leader, linearizable read p50 (ms)": 1000 * c.seq(
            c.leader, a.seq, via="read")["p50"],
        f"{prefix}(f) follower, linearizable read p50 (ms)": 1000 * c.seq(
            c.followers[0], a.seq, via="read")["p50"],
    }


def idle(c: Cluster, a: argparse.Namespace, redis: RedisServer | None) -> dict[str, float]:
    pids = [p.proc.pid for p in c.peers]
    before = [cpu_seconds(pid) for pid in pids]
    redis_before = cpu_seconds(redis.pid) if redis and redis.pid else 0.0
    time.sleep(a.idle)
    m = {"idle CPU, nodes (% of a core)": 100 * sum(
        cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True)) / a.idle}
    if redis and redis.pid:
        m["idle CPU, redis-server (%)"] = 100 * (cpu_seconds(redis.pid) - redis_before) / a.idle
    return m


def throughput(c: Cluster, a: argparse.Namespace, conflux: bool) -> dict[str, float]:
    """Pipelined; on conflux, store.dispatch right after RaftNode.append from the same
    node, so that both meet a log of about the same length."""
    m = {"(b) leader, pipelined (ops/s)": rate(c.pipe(c.leader, a.n, a.window))}
    if conflux:
        m["leader, store.dispatch pipelined (ops/s)"] = rate(
            c.pipe(c.leader, a.n, a.window, via="dispatch"))
        m["follower, append pipelined (ops/s)"] = rate(c.pipe(c.followers[0], a.n, a.window))
        m["follower, store.dispatch pipelined (ops/s)"] = rate(
            c.pipe(c.followers[0], a.n, a.window, via="dispatch"))
    m["(c) all nodes, pipelined (ops/s)"] = c.pipe_all(a.n // 3, a.all_window)
    m["(g) follower, linearizable reads pipelined (ops/s)"] = rate(
        c.pipe(c.followers[0], a.n, a.window, via="read"))
    return m


def memory(c: Cluster) -> dict[str, float]:
    c.agree()
    return {"resident memory per node, max (MiB)": max(rss_mib(p.proc.pid) for p in c.peers)}


def run_system(system: str, a: argparse.Namespace, redis: RedisServer) -> dict[str, float]:
    """Conflux: one cluster for everything. PySyncObj: its best option for each kind of
    scenario, appendEntriesUseBatch off for latency (it sends at once) and on for
    throughput (it batches, sending every appendEntriesPeriod)."""
    m: dict[str, float] = {}
    if system == "conflux":
        with closing(Cluster(system, 3, redis.url, profile=a.profile)) as c:
            time.sleep(1.0)  # settle after the election
            m.update(idle(c, a, redis))
            m.update(latency(c, a))
            m.update(throughput(c, a, conflux=True))
            m.update(memory(c))
        if a.five:
            with closing(Cluster(system, 5, redis.url)) as c:
                m.update(latency(c, a, "5 nodes "))
                m["5 nodes (b) leader, pipelined (ops/s)"] = rate(
                    c.pipe(c.leader, a.n, a.window))
                c.agree()
        return m
    with closing(Cluster(system, 3, "", batch="off")) as c:
        time.sleep(1.0)
        m.update(latency(c, a))
        c.agree()
    with closing(Cluster(system, 3, "", batch="on")) as c:
        time.sleep(1.0)
        m.update(idle(c, a, None))
        m.update(throughput(c, a, conflux=False))
        m.update(memory(c))
    if a.five:
        with closing(Cluster(system, 5, "", batch="off")) as c:
            m.update(latency(c, a, "5 nodes "))
            c.agree()
        with closing(Cluster(system, 5, "", batch="on")) as c:
            m["5 nodes (b) leader, pipelined (ops/s)"] = rate(c.pipe(c.leader, a.n, a.window))
            c.agree()
    return m


def lower_is_better(metric: str) -> bool:
    return "(ms)" in metric or "CPU" in metric or "MiB" in metric


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=20_000, help="calls per pipelined scenario")
    ap.add_argument("--window", type=int, default=5_000, help="in flight, from one node")
    ap.add_argument("--all-window", type=int, default=2_000, help="in flight, per node in (c)")
    ap.add_argument("--seq", type=int, default=1_000, help="calls per sequential scenario")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle CPU measured")
    ap.add_argument("--five", action="store_true", help="also run 5-node clusters")
    ap.add_argument("--json", help="also write the per-round figures to this file")
    ap.add_argument("--profile", default="", help="profile the 3 Conflux nodes (yappi, every "
                    "thread, CPU time): PREFIX.<node>.pstats, overwritten each round")
    a = ap.parse_args()
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory() as workdir:
        redis = RedisServer(find_redis_server(), Path(workdir))
        redis.start()
        try:
            for r in range(a.rounds):
                order = SYSTEMS if r % 2 == 0 else SYSTEMS[::-1]
                results: dict[str, dict[str, float]] = {}
                for system in order:
                    results[system] = run_system(system, a, redis)
                    print(f"round {r + 1} {system}: done", file=sys.stderr)
                rounds.append(results)
        finally:
            redis.stop()
    report(rounds, a)
    if a.json:
        Path(a.json).write_text(json.dumps(rounds, indent=1))


def report(rounds: list[dict[str, dict[str, float]]], a: argparse.Namespace) -> None:
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; every node a process; {a.rounds} rounds, "
          "systems alternated; medians, and the ratio per round (>1: Conflux is better)")
    metrics = list(rounds[0]["conflux"])
    width = max(len(m) for m in metrics)
    print(f"{'':{width}}  {'conflux':>10}  {'pysyncobj':>10}  {'ratio':>6}  per round")
    for m in metrics:
        ours = [r["conflux"][m] for r in rounds]
        theirs = [r["pysyncobj"].get(m) for r in rounds]
        line = f"{m:{width}}  {statistics.median(ours):10.2f}"
        if all(t is not None for t in theirs):
            peer = [float(t) for t in theirs if t is not None]
            per = [(p / o if lower_is_better(m) else o / p) if o and p else 0.0
                   for o, p in zip(ours, peer, strict=True)]
            line += (f"  {statistics.median(peer):10.2f}  {statistics.median(per):6.2f}  "
                     + " ".join(f"{x:.2f}" for x in per))
        print(line)
    dispatch = [r["conflux"]["leader, store.dispatch pipelined (ops/s)"]
                / r["conflux"]["(b) leader, pipelined (ops/s)"] for r in rounds]
    follower = [r["conflux"]["follower, store.dispatch pipelined (ops/s)"]
                / r["conflux"]["follower, append pipelined (ops/s)"] for r in rounds]
    print(f"store.dispatch / RaftNode.append: leader {statistics.median(dispatch):.2f}, "
          f"follower {statistics.median(follower):.2f}")
    print("replicas agreed after every turn")


if __name__ == "__main__":
    main()
