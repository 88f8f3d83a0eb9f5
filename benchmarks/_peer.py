"""One node of a benchmark cluster, in a process of its own, driven by bench_compare.py.

It reads one JSON command per line on stdin and answers one JSON line on stdout. Both
systems replicate the same state machine: a count and an order-sensitive hash of the
values added, so replicas that agree on the count and hash applied the same log.

    python benchmarks/_peer.py conflux --id a --members a,b,c --url URL --namespace NS
    python benchmarks/_peer.py pysyncobj --id a --members 127.0.0.1:7001,...
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

MASK = (1 << 61) - 1

Done = Callable[[bool], None]


def fold(state: tuple[int, int], value: int) -> tuple[int, int]:
    n, h = state
    return n + 1, (h * 1_000_003 + value) & MASK


class Conflux:
    """A conflux_redux store on Redis; `via` picks store.dispatch, node.append or
    store.read (a linearizable read: ReadIndex)."""

    def __init__(self, a: argparse.Namespace) -> None:
        from pydux import create_store

        from conflux_redux import conflux_enhancer

        def reducer(state: Any, action: dict[str, Any]) -> Any:
            state = state if state is not None else (0, 0)
            return fold(state, action["v"]) if action["type"] == "add" else state

        self.store = create_store(reducer, enhancer=conflux_enhancer({
            "id": a.id, "members": a.members.split(","),
            "channel": {"name": "redis", "url": a.url, "namespace": a.namespace},
        }))
        self.node = self.store.node

    def role(self) -> dict[str, Any]:
        return {"leader": self.node.is_leader(), "leader_id": self.node.leader_id}

    def _start(self, value: int, via: str) -> Future[Any]:
        if via == "read":
            return self.store.read()
        action = {"type": "add", "v": value}
        return self.store.dispatch(action) if via == "dispatch" else self.node.append(action)

    def submit(self, value: int, via: str, done: Done) -> None:
        self._start(value, via).add_done_callback(lambda f: done(f.exception() is None))

    def call(self, value: int, via: str) -> None:
        self._start(value, via).result(30)

    def state(self) -> tuple[int, int]:
        s = self.store.get_state()
        return (0, 0) if s is None else (int(s[0]), int(s[1]))

    def close(self) -> None:
        self.store.close()


class PySyncObjPeer:
    """PySyncObj with its own TCP transport and default options. It has no ReadIndex: a
    linearizable read goes through its log, as a replicated call that returns the value."""

    def __init__(self, a: argparse.Namespace) -> None:
        from pysyncobj import SyncObj, SyncObjConf, replicated

        batch = a.batch == "on"

        class Counter(SyncObj):  # type: ignore[misc]
            def __init__(self, me: str, partners: list[str]) -> None:
                super().__init__(me, partners, SyncObjConf(appendEntriesUseBatch=batch))
                self.value = (0, 0)

            @replicated  # type: ignore[misc]
            def add(self, v: int) -> None:
                self.value = fold(self.value, v)

            @replicated  # type: ignore[misc]
            def read(self) -> tuple[int, int]:
                return self.value

        members = a.members.split(",")
        self.obj = Counter(a.id, [m for m in members if m != a.id])

    def role(self) -> dict[str, Any]:
        leader = self.obj._getLeader()
        return {"leader": bool(self.obj._isLeader()),
                "leader_id": None if leader is None else str(leader)}

    def submit(self, value: int, via: str, done: Done) -> None:
        call = self.obj.read if via == "read" else partial(self.obj.add, value)
        call(callback=lambda _res, err: done(err == 0))

    def call(self, value: int, via: str) -> None:
        if via == "read":
            self.obj.read(sync=True, timeout=30)
        else:
            self.obj.add(value, sync=True, timeout=30)

    def state(self) -> tuple[int, int]:
        return self.obj.value  # type: ignore[no-any-return]

    def close(self) -> None:
        self.obj.destroy()


def sequential(peer: Conflux | PySyncObjPeer, n: int, base: int, via: str,
               limit: float) -> dict[str, Any]:
    """n calls one at a time (until `limit` seconds): latency per call."""
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        peer.call(base + i, via)
        latencies.append(time.perf_counter() - t)
        if t - start > limit:
            break
    latencies.sort()
    return {"ops": len(latencies), "p50": latencies[len(latencies) // 2],
            "p99": latencies[min(len(latencies) - 1, len(latencies) * 99 // 100)],
            "seconds": time.perf_counter() - start}


def pipelined(peer: Conflux | PySyncObjPeer, n: int, window: int, base: int, via: str,
              limit: float) -> dict[str, Any]:
    """n calls with at most `window` in flight: wall-clock throughput."""
    slots = threading.Semaphore(window)
    finished = threading.Semaphore(0)
    ok = [0]

    def done(success: bool) -> None:
        if success:
            ok[0] += 1
        slots.release()
        finished.release()

    t0, w0 = time.perf_counter(), time.time()
    deadline = time.monotonic() + limit
    submitted = 0
    for i in range(n):
        if not slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
            break
        peer.submit(base + i, via, done)
        submitted += 1
    for _ in range(submitted):
        if not finished.acquire(timeout=max(deadline - time.monotonic(), 0)):
            break
    seconds = time.perf_counter() - t0
    return {"ops": ok[0], "seconds": seconds, "start": w0, "end": w0 + seconds}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("system", choices=["conflux", "pysyncobj"])
    ap.add_argument("--id", required=True)
    ap.add_argument("--members", required=True)
    ap.add_argument("--url", default="")
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--batch", choices=["on", "off"], default="on",
                    help="PySyncObj's appendEntriesUseBatch")
    ap.add_argument("--profile", help="profile every thread (yappi, CPU time) into this "
                    "pstats file")
    a = ap.parse_args()
    if a.profile:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start()
    peer: Conflux | PySyncObjPeer = Conflux(a) if a.system == "conflux" else PySyncObjPeer(a)
    out = sys.stdout
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        kind = cmd["cmd"]
        reply: dict[str, Any]
        if kind == "role":
            reply = peer.role()
        elif kind == "seq":
            reply = sequential(peer, cmd["n"], cmd["base"], cmd["via"], cmd["limit"])
        elif kind == "pipe":
            reply = pipelined(peer, cmd["n"], cmd["window"], cmd["base"], cmd["via"],
                              cmd["limit"])
        elif kind == "state":
            reply = {"state": list(peer.state())}
        else:
            break
        out.write(json.dumps(reply) + "\n")
        out.flush()
    if a.profile:
        yappi.stop()
        yappi.get_func_stats().save(a.profile, type="pstat")
    peer.close()


if __name__ == "__main__":
    main()
