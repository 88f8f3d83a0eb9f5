"""One conflux_redux store holding a register, in its own process, for tests/test_nemesis.py.

Commands arrive as JSON lines on stdin, each answered by one JSON line on stdout with the
same id, and run concurrently (each answers from its future's callback, so a slow one
never holds up the others):

    {"op": "write", "id": N, "value": V, "timeout": T}  store.dispatch(set V)
    {"op": "cas", "id": N, "old": A, "new": B, "timeout": T}  store.perform("cas", [A, B])
    {"op": "read", "id": N, "timeout": T}  store["read"]: the committed state, linearizable
    {"op": "status", "id": N}  the node's role, term, leader, commit index, closed
    {"op": "state", "id": N}  the committed state, commit index and a digest of the log

Answers: {"id": N, "ok": true, "result": R} (write: null; cas: whether it applied; read:
the register's value) or {"id": N, "ok": false, "error": "TimeoutError", "message": ...}.
It also prints {"ev": "ready", "pid": P} once the store is built and {"ev": "leader",
"leader": L, "term": T} when it learns of a leader. It ends on stdin EOF; kill -9 is fine.

`python tests/_casproc.py --check` instead reads a history (a JSON list of
[kind, arg, result, start, end, client]) on stdin and prints whether it is linearizable as
a register, and how long the check took: the test runs the check in a child so that it
can bound it in time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

import orjson
from pydux import create_store

from conflux_redux import conflux_enhancer

_out = threading.Lock()


def emit(**fields: Any) -> None:
    with _out:
        sys.stdout.buffer.write(orjson.dumps(fields) + b"\n")
        sys.stdout.buffer.flush()


def reducer(state: Any, action: Any) -> Any:
    state = state if state is not None else {}
    if action.get("type") == "set":
        return {**state, "value": action["value"]}
    return state


def cas(state: Any, old: Any, new: Any) -> Any:
    """On the leader: the set action if the register holds `old`, else None (no change)."""
    if (state or {}).get("value") == old:
        return {"type": "set", "value": new}
    return None


def answer(cmd_id: Any, fut: Future[Any], result: Any = None) -> None:
    """Answer command `cmd_id` when `fut` is done; `result(value)` shapes the answer."""

    def done(f: Future[Any]) -> None:
        exc = f.exception()
        if exc is not None:
            emit(id=cmd_id, ok=False, error=type(exc).__name__, message=str(exc)[:200])
            return
        try:
            out = f.result() if result is None else result(f.result())
        except Exception as e:  # the test must always get an answer
            emit(id=cmd_id, ok=False, error=type(e).__name__, message=str(e)[:200])
            return
        emit(id=cmd_id, ok=True, result=out)

    fut.add_done_callback(done)


def value_of(state: Any) -> Any:
    return (state or {}).get("value")


def digest(store: Any) -> str:
    """The committed prefix of this node's log, hashed: equal on replicas that agree."""
    node = store.node
    commit = node.commit_index
    h = hashlib.sha256()
    for e in node.entries_after(0):
        if e.index > commit:
            break
        h.update(orjson.dumps([e.index, e.term]))
        h.update(e.data)
    return h.hexdigest()[:16]


def run(store: Any, cmd: dict[str, Any]) -> None:
    op, cmd_id, timeout = cmd.get("op"), cmd.get("id"), cmd.get("timeout")
    if op == "write":
        answer(cmd_id, store.dispatch({"type": "set", "value": cmd["value"]}, timeout=timeout),
               lambda _action: None)
    elif op == "cas":
        answer(cmd_id, store.perform("cas", [cmd["old"], cmd["new"]], timeout=timeout),
               lambda action: action is not None)
    elif op == "read":
        answer(cmd_id, store["read"](timeout=timeout), value_of)
    elif op == "status":
        node = store.node
        emit(id=cmd_id, ok=True, result={"is_leader": node.is_leader(), "term": node.term,
                                          "leader": node.leader_id, "commit": node.commit_index,
                                          "closed": node.closed})
    elif op == "state":  # on a thread of its own: reading the log takes the node's lock
        def state() -> None:
            emit(id=cmd_id, ok=True, result={"state": store.get_state(),
                                              "commit": store.node.commit_index,
                                              "digest": digest(store)})

        threading.Thread(target=state, daemon=True).start()
    else:
        emit(id=cmd_id, ok=False, error="ValueError", message=f"unknown op {op!r}")


def serve(a: argparse.Namespace) -> None:
    store = create_store(reducer, enhancer=conflux_enhancer({
        "id": a.id,
        "members": a.members.split(","),
        "channel": {"name": "redis", "url": a.url, "namespace": a.namespace},
        "storage": {"name": "file", "path": a.storage},
        "methods": {"cas": cas},
    }))
    store.node.on("leader_elected", lambda leader, term: emit(ev="leader", leader=leader,
                                                              term=term))
    emit(ev="ready", pid=os.getpid())
    try:
        for line in sys.stdin.buffer:
            if not line.strip():
                continue
            cmd = orjson.loads(line)
            try:
                run(store, cmd)
            except Exception as exc:  # refused at once (closed, overloaded, ...)
                emit(id=cmd.get("id"), ok=False, error=type(exc).__name__,
                     message=str(exc)[:200])
    finally:
        store.close(2)
    sys.stdout.flush()
    os._exit(0)  # threads of a store that could not close in time must not keep it alive


def check() -> None:
    from conflux_raft.testing import Op, Register, is_linearizable

    rows = orjson.loads(sys.stdin.buffer.read())
    history = [Op(kind, tuple(arg) if kind == "cas" else arg, result, start, end, client)
               for kind, arg, result, start, end, client in rows]
    t0 = time.monotonic()
    ok = is_linearizable(history, Register())
    emit(linearizable=ok, seconds=round(time.monotonic() - t0, 3), ops=len(history))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--check", action="store_true")
    p.add_argument("--id")
    p.add_argument("--members")
    p.add_argument("--url")
    p.add_argument("--namespace")
    p.add_argument("--storage")
    a = p.parse_args()
    if a.check:
        check()
    else:
        serve(a)


if __name__ == "__main__":
    main()
