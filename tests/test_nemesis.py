"""A nemesis against real processes: conflux_redux stores holding a register, each in its
own process (tests/_casproc.py) and each reaching one redis-server through its own
TcpProxy, while a few client threads write, compare-and-set and read, and a seeded
nemesis cuts links (a minority, the leader), slows one, pauses the leader (SIGSTOP),
kill -9s a node and restarts it on its storage, and restarts redis-server. The history
the clients saw must be linearizable, and the replicas must agree once all is healed.

Redis runs without persistence (RedisServer: no RDB, no AOF): a restart comes back
empty, and the nodes must make their inboxes again and go on from their own storage.

The checker (Wing and Gong's search) runs in a child process, so that its time is bounded;
reads whose answer never came are left out of it (they constrain nothing).

The seed is printed; `CONFLUX_NEMESIS_SEED=S` replays its choices (not its timing).
`CONFLUX_SOAK=1` runs the long version: 5 nodes, 4 clients, more rounds.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from conflux_raft.testing import (
    Op,
    RedisServer,
    Register,
    TcpProxy,
    find_redis_server,
    is_linearizable,
)

HERE = Path(__file__).parent
OP_TIMEOUT = 4.0  # what a node gives an operation; the client waits a little longer
CLIENT_SLACK = 4.0  # beyond OP_TIMEOUT: a paused node answers late, not never
CHECK_TIMEOUT = 120.0  # bound on one linearizability check (it runs in a child process)


# ---- one node process -------------------------------------------------------------------

@dataclass
class _Slot:
    event: threading.Event = field(default_factory=threading.Event)
    answer: dict[str, Any] | None = None
    end: float | None = None


class Proc:
    """One run of tests/_casproc.py: send it commands, get each answer and when it came."""

    def __init__(self, args: list[str], log: Path) -> None:
        with open(log, "ab") as err:  # the child keeps its own copy
            self.p = subprocess.Popen([sys.executable, str(HERE / "_casproc.py"), *args],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=err)
        self.ready = threading.Event()
        self._slots: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        try:
            for line in self.p.stdout:
                now = time.monotonic()
                msg = orjson.loads(line)
                if "ev" in msg:  # "ready", or "leader" (the test asks for status instead)
                    if msg["ev"] == "ready":
                        self.ready.set()
                    continue
                with self._lock:
                    slot = self._slots.pop(msg.get("id"), None)
                if slot is not None:
                    slot.answer, slot.end = msg, now
                    slot.event.set()
        except (OSError, ValueError):  # the pipe closed under us, or a torn line at a kill
            pass
        finally:  # the process is gone: what it owed stays unanswered
            with self._lock:
                slots, self._slots = list(self._slots.values()), {}
            for slot in slots:
                slot.event.set()

    def call(self, cmd: dict[str, Any], wait: float) -> tuple[float, dict[str, Any] | None,
                                                               float | None] | None:
        """Send `cmd`; None if it could not be sent, else (sent at, answer, answered at),
        the answer None if none came within `wait` seconds or the process died."""
        slot = _Slot()
        with self._lock:
            cid = next(self._ids)
            self._slots[cid] = slot
        line = orjson.dumps({**cmd, "id": cid}) + b"\n"
        assert self.p.stdin is not None
        with self._write_lock:
            start = time.monotonic()
            try:
                self.p.stdin.write(line)
                self.p.stdin.flush()
            except (OSError, ValueError):
                with self._lock:
                    self._slots.pop(cid, None)
                return None
        slot.event.wait(wait)
        with self._lock:
            self._slots.pop(cid, None)
        return start, slot.answer, slot.end

    def alive(self) -> bool:
        return self.p.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.p.pid, sig)

    def stop(self) -> None:
        """End it: stdin EOF, then SIGKILL if it lingers; reap it and close the pipes."""
        self.signal(signal.SIGCONT)
        with self._write_lock, contextlib.suppress(OSError, ValueError):
            assert self.p.stdin is not None
            self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
        self._reader.join(10)
        if self.p.stdout is not None:
            self.p.stdout.close()


class Node:
    """A node of the cluster: its proxy, its storage, and its current process."""

    def __init__(self, node_id: str, members: list[str], proxy: TcpProxy, namespace: str,
                 workdir: Path) -> None:
        self.id = node_id
        self.proxy = proxy
        self.args = ["--id", node_id, "--members", ",".join(members),
                     "--url", f"redis://127.0.0.1:{proxy.port}/0", "--namespace", namespace,
                     "--storage", str(workdir / node_id)]
        self.log = workdir / f"{node_id}.log"
        self.proc = Proc(self.args, self.log)
        self.paused = False

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"last lines of {self.log}:\n" + "\n".join(text.splitlines()[-lines:])

    def restart(self) -> None:
        self.proc.stop()
        self.proc = Proc(self.args, self.log)

    def status(self) -> dict[str, Any] | None:
        out = self.proc.call({"op": "status"}, 1.0)
        if out is None or out[1] is None or not out[1]["ok"]:
            return None
        result: dict[str, Any] = out[1]["result"]
        return result


# ---- the cluster and the nemesis --------------------------------------------------------

class Cluster:
    def __init__(self, n: int, redis: RedisServer, workdir: Path) -> None:
        self.redis = redis
        ids = [f"n{i}" for i in range(n)]
        namespace = f"nemesis-{uuid.uuid4().hex[:10]}"
        self.nodes: list[Node] = []
        try:
            for i in ids:
                proxy = TcpProxy("127.0.0.1", redis.port)
                self.nodes.append(Node(i, ids, proxy, namespace, workdir))
            self.wait_ready(self.nodes)
        except BaseException:
            self.close()
            raise

    def wait_ready(self, nodes: Sequence[Node]) -> None:
        for node in nodes:
            assert node.proc.ready.wait(30), f"{node.id} did not start\n{node.log_tail()}"

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.alive()]

    def leader(self, timeout: float = 5.0) -> Node | None:
        """The node that says it leads, in the highest term, asked now (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            best: tuple[int, Node] | None = None
            for node in self.live():
                if node.paused:
                    continue
                st = node.status()
                if st is not None and st["is_leader"] and (best is None or st["term"] > best[0]):
                    best = (st["term"], node)
            if best is not None or time.monotonic() > deadline:
                return None if best is None else best[1]
            time.sleep(0.1)

    def heal_all(self) -> None:
        self.redis.ensure_running()
        for node in self.nodes:
            node.proxy.heal()
            node.proxy.delay(0)
            if node.paused:
                node.proc.signal(signal.SIGCONT)
                node.paused = False
            if not node.proc.alive():
                node.restart()
        self.wait_ready(self.nodes)

    def close(self) -> None:
        for node in self.nodes:
            node.proc.stop()
        for node in self.nodes:
            node.proxy.close()


class Nemesis:
    """Seeded faults, one at a time, each healed and followed by a quiet period."""

    KINDS = ("cut_minority", "cut_leader", "delay", "pause_leader", "kill_restart",
             "restart_redis")

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.c = cluster
        self.rng = rng
        self.applied: Counter[str] = Counter()
        self.log: list[str] = []

    def _note(self, kind: str, what: str) -> None:
        self.applied[kind] += 1
        terms = [None if n.paused or not (st := n.status()) else st["term"]
                 for n in self.c.nodes]
        self.log.append(f"{time.monotonic():.2f} {kind}: {what} (terms {terms})")

    def _leader_or_any(self) -> Node:
        leader = self.c.leader()
        return leader if leader is not None else self.rng.choice(self.c.live())

    def run(self, rounds: int) -> None:
        for _ in range(rounds):
            kinds = list(self.KINDS)
            self.rng.shuffle(kinds)
            for kind in kinds:
                getattr(self, kind)()
                time.sleep(self.rng.uniform(1.0, 2.0))  # quiet
                leader = self.c.leader(10.0)  # let it recover before the next fault
                self.log[-1] += f"; then leader {leader.id if leader else None}"

    def cut_minority(self) -> None:
        leader = self.c.leader()
        others = [n for n in self.c.nodes if n is not leader]
        victims = self.rng.sample(others, self.rng.randint(1, (len(self.c.nodes) - 1) // 2))
        mode: Literal["blackhole", "reset"] = (
            "reset" if self.rng.random() < 0.25 else "blackhole")
        for v in victims:
            v.proxy.cut(mode)
        self._note("cut_minority", f"{[v.id for v in victims]} ({mode})")
        time.sleep(self.rng.uniform(1.0, 2.5))
        for v in victims:
            v.proxy.heal()

    def cut_leader(self) -> None:
        victim = self._leader_or_any()
        victim.proxy.cut()
        self._note("cut_leader", victim.id)
        time.sleep(self.rng.uniform(1.5, 2.5))
        victim.proxy.heal()

    def delay(self) -> None:
        victim = self._leader_or_any() if self.rng.random() < 0.5 else self.rng.choice(
            self.c.nodes)
        # Small delays slow the link; ones beyond the election timeout (0.3-0.5 s) make a
        # slowed leader miss its quorum's answers (it steps down) while what it sends
        # still arrives, late.
        seconds = self.rng.uniform(0.02, 0.2) if self.rng.random() < 0.5 else \
            self.rng.uniform(0.3, 0.8)
        victim.proxy.delay(seconds)
        self._note("delay", f"{victim.id} {seconds:.3f} s")
        time.sleep(self.rng.uniform(1.5, 3.0))
        victim.proxy.delay(0)

    def pause_leader(self) -> None:
        victim = self._leader_or_any()
        victim.paused = True
        victim.proc.signal(signal.SIGSTOP)
        self._note("pause_leader", victim.id)
        time.sleep(self.rng.uniform(1.0, 2.0))
        victim.proc.signal(signal.SIGCONT)
        victim.paused = False

    def kill_restart(self) -> None:
        victim = self._leader_or_any() if self.rng.random() < 0.5 else self.rng.choice(
            self.c.nodes)
        victim.proc.signal(signal.SIGKILL)
        self._note("kill_restart", victim.id)
        time.sleep(self.rng.uniform(0.3, 1.0))
        victim.restart()
        self.c.wait_ready([victim])

    def restart_redis(self) -> None:
        self.c.redis.stop()
        self._note("restart_redis", "SIGKILL, then a fresh start (empty)")
        time.sleep(self.rng.uniform(0.5, 1.5))
        self.c.redis.start()


# ---- clients ----------------------------------------------------------------------------

class History:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.lock = threading.Lock()
        self.values = itertools.count(1)  # every value written is unique

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)


def client(name: str, cluster: Cluster, history: History, rng: random.Random,
           stop: threading.Event) -> None:
    """One op at a time, to a random live node, until `stop`."""
    seen: Any = None  # the last value this client knows of, for its cas
    while not stop.is_set():
        live = cluster.live()
        if not live:
            time.sleep(0.05)
            continue
        node = rng.choice(live)
        r = rng.random()
        arg: Any
        if r < 0.4:
            kind, arg = "write", next(history.values)
            cmd: dict[str, Any] = {"op": "write", "value": arg}
        elif r < 0.65:
            kind, arg = "cas", (seen, next(history.values))
            cmd = {"op": "cas", "old": arg[0], "new": arg[1]}
        else:
            kind, arg, cmd = "read", None, {"op": "read"}
        out = node.proc.call({**cmd, "timeout": OP_TIMEOUT}, OP_TIMEOUT + CLIENT_SLACK)
        if out is None:  # never sent: it did not happen
            continue
        start, answer, end = out
        if answer is None or not answer["ok"]:  # timed out, failed, or its process died
            history.add(Op(kind, arg, None, start, None, name))
        else:
            result = answer["result"]
            history.add(Op(kind, arg, result, start, end, name))
            if kind == "read":
                seen = result
            elif kind == "write" or (kind == "cas" and result):
                seen = arg if kind == "write" else arg[1]
        time.sleep(rng.uniform(0.02, 0.12))


# ---- checks -----------------------------------------------------------------------------

def check_linearizable(history: Sequence[Op], timeout: float = CHECK_TIMEOUT) -> tuple[bool,
                                                                                       float]:
    """Run the Wing-Gong checker on `history` in a child process, bounded by `timeout`."""
    rows = [[op.kind, op.arg, op.result, op.start, op.end, op.client] for op in history]
    try:
        out = subprocess.run([sys.executable, str(HERE / "_casproc.py"), "--check"],
                             input=orjson.dumps(rows), capture_output=True, timeout=timeout,
                             check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the linearizability check of {len(history)} ops took over {timeout} s")
    verdict = orjson.loads(out.stdout)
    return bool(verdict["linearizable"]), float(verdict["seconds"])


def definite(op: Op) -> bool:
    """Whether `op` surely took effect as a write: an answered write or successful cas."""
    return op.end is not None and (op.kind == "write" or (op.kind == "cas" and op.result))


def written(op: Op) -> Any:
    return op.arg if op.kind == "write" else op.arg[1]


def stale_reads(history: Sequence[Op]) -> list[tuple[Op, Op]]:
    """Reads that surely missed a write: (read, the write it missed). A read R of value a
    is stale when a write Wb of another value finished before R started and began after
    the write of a had finished (or a is the initial None). A sufficient sign of a history
    that is not linearizable; the checker decides the rest."""
    writers = {written(op): op for op in history if op.kind in ("write", "cas")}
    done = [op for op in history if definite(op)]
    out = []
    for r in history:
        if r.kind != "read" or r.end is None:
            continue
        if r.result is None:
            after = -float("inf")  # the initial value: any write finished before overwrote it
        else:
            wa = writers.get(r.result)
            if wa is None or wa.end is None:  # unknown value, or a write still in doubt
                continue
            after = wa.end
        for wb in done:
            if written(wb) != r.result and wb.start > after and wb.end is not None \
                    and wb.end < r.start:
                out.append((r, wb))
                break
    return out


def shortest_failing_prefix(history: Sequence[Op], budget: float = 60.0) -> list[Op]:
    """The history up to the earliest time at which it is already not linearizable
    (bisected; ops still running at that time count as unanswered, which is sound)."""
    ops = sorted(history, key=lambda op: op.start)
    deadline = time.monotonic() + budget

    def prefix(t: float) -> list[Op]:
        return [op if op.end is not None and op.end <= t else replace(op, end=None, result=None)
                for op in ops if op.start <= t]

    lo, hi = 0, len(ops) - 1  # prefix(ops[hi].start + big) fails
    best = list(ops)
    while lo < hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        cut = prefix(ops[mid].end or ops[mid].start)
        ok, _ = check_linearizable(cut, max(deadline - time.monotonic(), 1.0))
        if ok:
            lo = mid + 1
        else:
            hi, best = mid, cut
    return best


def describe(op: Op, t0: float) -> str:
    end = "   ?   " if op.end is None else f"{op.end - t0:7.3f}"
    return (f"  {op.client:>3} {op.start - t0:7.3f} {end}  {op.kind:5} arg={op.arg!r} "
            f"-> {op.result!r}")


def planted(history: Sequence[Op]) -> list[Op] | None:
    """`history` with a stale read added early on: it starts after a write of B finished
    that began after a write of A finished, and answers A. None if no such pair."""
    done = sorted((op for op in history if definite(op) and op.kind == "write"),
                  key=lambda op: op.start)
    for wa, wb in itertools.pairwise(done[: max(len(done) // 3, 2)]):
        assert wa.end is not None and wb.end is not None
        if wb.start > wa.end:
            start = wb.end + 1e-4
            return [*history, Op("read", None, wa.arg, start, start + 1e-4, "planted")]
    return None


# ---- the run ----------------------------------------------------------------------------

def nemesis_run(tmp_path: Path, nodes: int, clients: int, rounds: int) -> None:
    seed = int(os.environ.get("CONFLUX_NEMESIS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\nnemesis seed {seed} (CONFLUX_NEMESIS_SEED={seed} replays its choices)")
    rng = random.Random(seed)
    t_begin = time.monotonic()
    redis = RedisServer(find_redis_server(), tmp_path)
    redis.start()
    cluster: Cluster | None = None
    threads: list[threading.Thread] = []
    stop = threading.Event()
    history = History()
    try:
        cluster = Cluster(nodes, redis, tmp_path)
        assert cluster.leader(20.0) is not None, "no leader at start"
        t_start = time.monotonic()
        for i in range(clients):
            crng = random.Random(rng.getrandbits(64))
            t = threading.Thread(target=client, args=(f"c{i}", cluster, history, crng, stop),
                                 daemon=True)
            threads.append(t)
            t.start()
        nemesis = Nemesis(cluster, rng)
        nemesis.run(rounds)
        stop.set()
        for t in threads:
            t.join(OP_TIMEOUT + CLIENT_SLACK + 5)
        assert not any(t.is_alive() for t in threads), "a client did not stop"
        cluster.heal_all()
        t_faults = time.monotonic() - t_start

        # After healing, every node is up, answers a read, and all agree on the state.
        for node in cluster.nodes:
            st = node.status()
            assert st is not None and not st["closed"], \
                f"{node.id} is down after healing: {st}\n{node.log_tail()}"
        final: list[Any] = []
        for node in cluster.nodes:
            deadline = time.monotonic() + 30
            while True:
                out = node.proc.call({"op": "read", "timeout": OP_TIMEOUT}, OP_TIMEOUT + 5)
                assert out is not None, f"{node.id} is gone\n{node.log_tail()}"
                start, answer, end = out
                if answer is not None and answer["ok"]:
                    history.add(Op("read", None, answer["result"], start, end, "final"))
                    final.append(answer["result"])
                    break
                assert time.monotonic() < deadline, \
                    f"{node.id} could not read after healing: {answer}\n{node.log_tail()}"
        assert len(set(final)) == 1, f"final reads differ: {final}"

        def states() -> list[tuple[Any, int, str]]:
            out = []
            for node in cluster.nodes:
                got = node.proc.call({"op": "state"}, 5.0)
                assert got is not None and got[1] is not None, f"{node.id} did not answer"
                r = got[1]["result"]
                out.append((r["state"], r["commit"], r["digest"]))
            return out

        deadline = time.monotonic() + 30
        snapshot = states()
        while len({orjson.dumps(s) for s in snapshot}) != 1:
            assert time.monotonic() < deadline, f"replicas did not converge: {snapshot}"
            time.sleep(0.2)
            snapshot = states()
        converged_value = (snapshot[0][0] or {}).get("value")
        assert converged_value == final[0]
    finally:
        stop.set()
        for t in threads:
            t.join(OP_TIMEOUT + CLIENT_SLACK + 5)
        if cluster is not None:
            cluster.close()
        redis.stop()

    ops = list(history.ops)
    check_ops = [op for op in ops if not (op.kind == "read" and op.end is None)]
    ok, seconds = check_linearizable(check_ops)
    stale = stale_reads(ops)
    outcomes = Counter(
        (op.kind, "unknown" if op.end is None else
         ("applied" if op.result else "failed") if op.kind == "cas" else "ok")
        for op in ops)
    print(f"nodes {nodes}, clients {clients}, faults for {t_faults:.1f} s")
    print("ops: " + ", ".join(f"{k} {o}: {n}" for (k, o), n in sorted(outcomes.items()))
          + f" ({len(ops)} in all)")
    print("faults: " + ", ".join(f"{k}: {n}" for k, n in sorted(nemesis.applied.items())))
    print("faults applied:\n  " + "\n  ".join(nemesis.log))
    print(f"stale reads: {len(stale)}")
    print(f"linearizable: {ok} (checked {len(check_ops)} ops in {seconds:.2f} s)")
    print(f"converged on value {converged_value!r}; whole run {time.monotonic() - t_begin:.1f} s")
    if not ok or stale:
        t0 = min(op.start for op in ops)
        dump = tmp_path / "history.json"
        dump.write_bytes(orjson.dumps([[op.kind, op.arg, op.result, op.start, op.end,
                                        op.client] for op in ops]))
        for r, wb in stale[:5]:
            print(f"stale: {describe(r, t0)}\n missed {describe(wb, t0)}")
        prefix = shortest_failing_prefix(check_ops)
        print(f"shortest failing prefix ({len(prefix)} ops), its last 25 by start:")
        for op in sorted(prefix, key=lambda op: op.start)[-25:]:
            print(describe(op, t0))
        print(f"history written to {dump}")
    assert not stale, f"seed {seed}: {len(stale)} stale reads"
    assert ok, f"seed {seed}: the history is not linearizable"

    # The same check fails on this history with one stale read planted in it.
    bad = planted(check_ops)
    if bad is not None:
        assert len(stale_reads(bad)) == 1
        ok_bad, seconds_bad = check_linearizable(bad)
        print(f"with a planted stale read: linearizable {ok_bad} ({seconds_bad:.2f} s)")
        assert not ok_bad


@pytest.mark.redis
def test_nemesis_three_nodes(tmp_path: Path) -> None:
    nemesis_run(tmp_path, nodes=3, clients=3, rounds=2)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CONFLUX_SOAK"), reason="set CONFLUX_SOAK=1")
def test_nemesis_five_nodes_soak(tmp_path: Path) -> None:
    nemesis_run(tmp_path, nodes=5, clients=4, rounds=6)


# ---- the checker can fail ---------------------------------------------------------------

def shaped_history() -> list[Op]:
    """A small history shaped like a recorded one: three clients, unique values, a cas
    that applied and one that did not, a write whose outcome is unknown, overlaps."""
    return [
        Op("write", 1, None, 0.00, 0.02, "c0"),
        Op("read", None, 1, 0.01, 0.03, "c1"),
        Op("cas", (1, 2), True, 0.04, 0.07, "c2"),
        Op("write", 3, None, 0.05, None, "c0"),  # timed out: may have applied, or not
        Op("read", None, 2, 0.08, 0.09, "c1"),
        Op("write", 4, None, 0.10, 0.12, "c1"),
        Op("cas", (2, 5), False, 0.11, 0.13, "c2"),
        Op("read", None, 4, 0.14, 0.15, "c0"),
        Op("write", 6, None, 0.16, 0.18, "c2"),
        Op("read", None, 6, 0.19, 0.20, "c1"),
    ]


def test_the_check_catches_a_planted_stale_read() -> None:
    history = shaped_history()
    assert is_linearizable(history, Register())
    assert stale_reads(history) == []
    # Started after the write of 6 finished (which began after the write of 4 finished),
    # and answers 4: a stale read.
    stale = Op("read", None, 4, 0.21, 0.22, "c0")
    assert not is_linearizable([*history, stale], Register())
    assert stale_reads([*history, stale]) == [(stale, history[8])]
    assert check_linearizable([*history, stale])[0] is False
    bad = planted(history)
    assert bad is not None and not is_linearizable(bad, Register())


# ---- the proxy --------------------------------------------------------------------------

@pytest.fixture
def echo() -> Iterator[int]:
    """An echo server on 127.0.0.1: its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve_one(c: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := c.recv(65536):
                c.sendall(data)

    def serve() -> None:
        while not stop.is_set():
            try:
                c, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            conns.append(c)
            threading.Thread(target=serve_one, args=(c,), daemon=True).start()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join(5)
    server.close()
    for c in conns:
        c.close()


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def roundtrip(s: socket.socket, data: bytes) -> bytes:
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def closed_soon(s: socket.socket) -> bool:
    """Whether the peer ends `s` (FIN or RST) within a bounded wait."""
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def silent(s: socket.socket, data: bytes) -> bool:
    """Whether `data` sent on `s` goes unanswered for half a second."""
    s.settimeout(0.5)
    try:
        s.sendall(data)
        s.recv(1)  # an answer, or the end of the connection: not silent
        return False
    except TimeoutError:
        return True
    finally:
        s.settimeout(5)


def test_proxy_forwards_delays_cuts_and_heals(echo: int) -> None:
    with TcpProxy("127.0.0.1", echo) as proxy:
        a = connect(proxy.port)
        big = os.urandom(3 << 20)
        assert roundtrip(a, b"hello") == b"hello"
        assert roundtrip(a, big) == big
        proxy.delay(1.0)  # held back: not there after a moment, there in the end
        assert silent(a, b"slow")
        a.settimeout(5)
        assert a.recv(4) == b"slow"
        proxy.delay(0)
        assert roundtrip(a, b"fast") == b"fast"

        proxy.cut()  # a blackhole: the open connection and a new one go silent
        b = connect(proxy.port)
        assert silent(a, b"lost") and silent(b, b"lost too")
        proxy.heal()  # the silenced connections end; new ones work
        assert closed_soon(a) and closed_soon(b)
        c = connect(proxy.port)
        assert roundtrip(c, b"again") == b"again"

        proxy.cut("reset")  # open connections are reset, new ones too
        assert closed_soon(c)
        try:
            d = connect(proxy.port)
        except ConnectionResetError:  # the reset came before connect() looked
            pass
        else:
            assert closed_soon(d)
            d.close()
        proxy.heal()
        e = connect(proxy.port)
        assert roundtrip(e, b"back") == b"back"
        for s in (a, b, c, e):
            s.close()


def test_proxy_closes_promptly_with_connections_open(echo: int) -> None:
    proxy = TcpProxy("127.0.0.1", echo)
    a = connect(proxy.port)
    assert roundtrip(a, b"x") == b"x"
    proxy.cut()
    b = connect(proxy.port)
    proxy.close()
    proxy.close()  # twice is harmless
    assert closed_soon(a) and closed_soon(b)
    with pytest.raises(OSError):
        connect(proxy.port)
    with pytest.raises(RuntimeError):
        proxy.heal()
    a.close()
    b.close()


def test_proxy_ends_the_client_when_the_target_refuses() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there
    with TcpProxy("127.0.0.1", port) as proxy:
        a = connect(proxy.port)
        assert closed_soon(a)
        a.close()

