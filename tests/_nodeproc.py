"""One RaftNode in its own process, for the fault tests (kill -9, SIGSTOP, Redis restarts).

It prints JSON lines: {"ev": "ready"}, {"ev": "leader", ...}, {"ev": "commit", "index",
"data"}, {"ev": "ack", "index", "data"} for its own acknowledged appends, and
{"ev": "status", ...} and {"ev": "state", "values": [...]} (every value applied, in
order; with --snapshot-every its snapshot is that list) on request. Commands on stdin:
"run" (append continuously), "pause" (stop appending), "status", "state", "quit". It ends
by itself after --lifetime seconds. Appended values are [id, pid, n]: unique across
restarts.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from concurrent.futures import Future
from typing import Any

import orjson

from conflux_raft import RaftNode

_out = threading.Lock()


def emit(**fields: Any) -> None:
    with _out:
        sys.stdout.buffer.write(orjson.dumps(fields) + b"\n")
        sys.stdout.buffer.flush()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--id", required=True)
    p.add_argument("--members", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--storage")
    p.add_argument("--secret")
    p.add_argument("--inflight", type=int, default=4)
    p.add_argument("--lifetime", type=float, default=120.0)
    p.add_argument("--snapshot-every", type=int, default=0)
    a = p.parse_args()
    values: list[Any] = []

    def restore(data: bytes) -> None:
        values[:] = orjson.loads(data)

    snapshots: dict[str, Any] = {}
    if a.snapshot_every:
        snapshots = {"snapshot": lambda: orjson.dumps(values), "restore": restore,
                     "snapshot_every": a.snapshot_every}
    node = RaftNode(
        id=a.id, members=a.members.split(","),
        channel={"name": "redis", "url": a.url, "namespace": a.namespace},
        election_timeout=(0.3, 0.5), heartbeat_interval=0.05,
        storage={"name": "file", "path": a.storage} if a.storage else None,
        secret=a.secret, autostart=False, **snapshots,
    )

    def committed(data: Any, index: int) -> None:
        values.append(data)
        emit(ev="commit", index=index, data=data)

    node.on("committed", committed)
    node.on("leader_elected", lambda leader, term: emit(ev="leader", leader=leader, term=term))
    node.start()
    emit(ev="ready", pid=os.getpid())
    running = threading.Event()
    slots = threading.Semaphore(a.inflight)
    counter = 0

    def acked(fut: Future[int], data: Any) -> None:
        slots.release()
        if fut.exception() is None:
            emit(ev="ack", index=fut.result(), data=data)

    def producer() -> None:
        nonlocal counter
        while True:
            running.wait()
            slots.acquire()
            counter += 1
            data = [a.id, os.getpid(), counter]
            node.append(data, timeout=5).add_done_callback(lambda f, d=data: acked(f, d))

    threading.Thread(target=producer, daemon=True).start()
    stdin = threading.Thread(target=lambda: commands(node, running, values), daemon=True)
    stdin.start()
    stdin.join(a.lifetime)
    node.close(2)


def commands(node: RaftNode, running: threading.Event, values: list[Any]) -> None:
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "run":
            running.set()
        elif cmd == "pause":
            running.clear()
        elif cmd == "status":
            emit(ev="status", **node.status())
        elif cmd == "state":
            emit(ev="state", values=list(values), **node.status())
        elif cmd == "quit":
            return


if __name__ == "__main__":
    main()
