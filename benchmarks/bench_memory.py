"""Memory and disk with log compaction: does a cluster stay flat as entries pile up?

Three RaftNodes in this one process, over a private redis-server (started and ended by
this script), on file storage in a temporary directory, each keeping a small state (a
count and a hash of every value) that it snapshots every --snapshot-every entries.
Appends are pipelined from the leader. After each checkpoint it prints the process's
resident memory (all three nodes), the entries each node holds in memory, the bytes of
its storage directory, and the entries in the Redis inbox streams and Redis's memory.
With --no-snapshots the same run without compaction, for comparison.

    .venv/bin/python benchmarks/bench_memory.py --checkpoints 100000 1000000
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import tempfile
import threading
import time
import uuid
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from conflux_raft import RaftNode
from conflux_raft.testing import RedisServer, find_redis_server


class Counter:
    """The state machine: how many values, and a hash chained over them."""

    def __init__(self) -> None:
        self.count, self.digest = 0, b""

    def apply(self, data: Any, index: int) -> None:
        self.count += 1
        self.digest = hashlib.blake2b(self.digest + orjson.dumps(data), digest_size=16).digest()

    def snapshot(self) -> bytes:
        return orjson.dumps([self.count, self.digest.hex()])

    def restore(self, data: bytes) -> None:
        count, digest = orjson.loads(data)
        self.count, self.digest = count, bytes.fromhex(digest)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--snapshot-every", type=int, default=10_000)
    ap.add_argument("--no-snapshots", action="store_true")
    ap.add_argument("--window", type=int, default=2_000, help="appends in flight")
    a = ap.parse_args()
    ns = f"mem-{uuid.uuid4().hex[:6]}"
    ids = ["a", "b", "c"]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "redis").mkdir()
        server = RedisServer(find_redis_server(), Path(tmp) / "redis")
        server.start()
        apps = {i: Counter() for i in ids}
        nodes = {}
        for i in ids:
            extra: dict[str, Any] = {} if a.no_snapshots else {
                "snapshot": apps[i].snapshot, "restore": apps[i].restore,
                "snapshot_every": a.snapshot_every}
            n = RaftNode(id=i, members=ids, autostart=False,
                         channel={"name": "redis", "url": server.url, "namespace": ns},
                         storage={"name": "file", "path": str(Path(tmp) / i)}, **extra)
            n.on("committed", apps[i].apply)
            n.start()
            nodes[i] = n
        r = server.client()
        try:
            deadline = time.monotonic() + 30
            while not any(n.is_leader() for n in nodes.values()):
                if time.monotonic() > deadline:
                    raise SystemExit("no leader elected")
                time.sleep(0.05)
            leader = next(n for n in nodes.values() if n.is_leader())
            slots = threading.Semaphore(a.window)
            done = 0
            mode = "without compaction" if a.no_snapshots else (
                f"snapshot every {a.snapshot_every:,} entries")
            print(f"3 nodes in one process, Redis channel, file storage, {mode}")
            print(f"{'entries':>10}  {'RSS MiB':>8}  {'in memory (a, b, c)':>22}  "
                  f"{'disk MiB (a, b, c)':>20}  {'inbox entries':>13}  {'redis MiB':>9}  "
                  f"{'appends/s':>9}")
            start = time.perf_counter()

            def release(_: Future[int]) -> None:
                slots.release()

            for target in sorted(a.checkpoints):
                while done < target:
                    slots.acquire()
                    leader.append(done, timeout=60).add_done_callback(release)
                    done += 1
                for _ in range(a.window):
                    slots.acquire()
                for _ in range(a.window):
                    slots.release()
                elapsed = time.perf_counter() - start
                deadline = time.monotonic() + 60
                while any(app.count < done for app in apps.values()):
                    if time.monotonic() > deadline:
                        raise SystemExit("the replicas did not catch up")
                    time.sleep(0.05)
                gc.collect()
                held = [len(n.entries_after(0)) for n in nodes.values()]
                disk = [dir_bytes(Path(tmp) / i) / 2**20 for i in ids]
                inbox = sum(int(r.xlen(k)) for k in r.scan_iter(f"conflux:{{{ns}}}:inbox:*"))
                used = int(r.info("memory")["used_memory"]) / 2**20
                print(f"{done:>10,}  {rss_mib():>8.1f}  {', '.join(f'{h:,}' for h in held):>22}"
                      f"  {', '.join(f'{d:.1f}' for d in disk):>20}  {inbox:>13,}  "
                      f"{used:>9.1f}  {done / elapsed:>9,.0f}")
            states = {(app.count, app.digest) for app in apps.values()}
            print(f"replicas agree (count and hash): {len(states) == 1}")
        finally:
            for n in nodes.values():
                n.close()
            r.close()
            server.stop()
            os.sync()


if __name__ == "__main__":
    main()
