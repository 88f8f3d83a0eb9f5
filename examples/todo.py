"""A replicated todo list: each node is a separate process, talking over Redis Streams.

Start three nodes, in three terminals (any order; a node waits for a majority):

    python examples/todo.py --redis redis://127.0.0.1:6379/0 --id a --members a,b,c
    python examples/todo.py --redis redis://127.0.0.1:6379/0 --id b --members a,b,c
    python examples/todo.py --redis redis://127.0.0.1:6379/0 --id c --members a,b,c

then type `add buy milk`, `done 1`, `list` or `quit` in any of them: every node prints
the list when a change commits. Stop one node (Ctrl-C, even the leader) and the other
two go on.

Scripted, for tests: `--add TEXT` (repeatable) adds items at start, `--until N` waits
until the list holds N items, prints it as JSON on the last line and exits.

The methods check against the leader's provisional state, so two nodes adding the same
text at the same moment get one item and one `ValueError`, and ids never collide.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from pydux import create_store

from conflux_redux import ConfluxStore, conflux_enhancer


def reducer(state: Any, action: dict[str, Any]) -> Any:
    state = {"todos": [], "next_id": 1} if state is None else state
    kind = action["type"]
    if kind == "add":
        todo = {"id": action["id"], "text": action["text"], "done": False, "by": action["by"]}
        return {"todos": [*state["todos"], todo], "next_id": action["id"] + 1}
    if kind == "done":
        todos = [{**t, "done": True} if t["id"] == action["id"] else t for t in state["todos"]]
        return {**state, "todos": todos}
    if kind == "clear":
        return {**state, "todos": [t for t in state["todos"] if not t["done"]]}
    return state


def add(state: Any, text: str, by: str) -> Any:
    if any(t["text"] == text for t in state["todos"]):
        return ValueError(f"{text!r} is already on the list")
    return {"type": "add", "id": state["next_id"], "text": text, "by": by}


def done(state: Any, todo_id: int) -> Any:
    todo = next((t for t in state["todos"] if t["id"] == todo_id), None)
    if todo is None:
        return KeyError(f"no todo #{todo_id}")
    if todo["done"]:
        return None  # nothing to do
    return {"type": "done", "id": todo_id}


def clear(state: Any) -> Any:
    return {"type": "clear"} if any(t["done"] for t in state["todos"]) else None


def show(store: ConfluxStore) -> None:
    todos = store.get_state()["todos"]
    print(f"--- {store.node.id}: {len(todos)} todo(s)")
    for t in todos:
        print(f"  [{'x' if t['done'] else ' '}] #{t['id']} {t['text']}  (from {t['by']})")
    sys.stdout.flush()


def interact(store: ConfluxStore, timeout: float) -> None:
    print("commands: add TEXT | done ID | clear | list | quit")
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        try:
            if cmd == "add" and rest:
                store.perform("add", [rest, store.node.id], timeout).result(timeout)
            elif cmd == "done" and rest.isdigit():
                store.perform("done", [int(rest)], timeout).result(timeout)
            elif cmd == "clear":
                store.perform("clear", [], timeout).result(timeout)
            elif cmd == "list":
                show(store)
            elif cmd in ("quit", "exit"):
                return
            elif cmd:
                print("?", line.strip())
        except TimeoutError:
            print("timed out (no leader reachable?); it may still commit later")
        except Exception as exc:
            print(f"refused: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", required=True)
    parser.add_argument("--id", required=True, help="this node's id, one of --members")
    parser.add_argument("--members", required=True, help="every node's id: a,b,c")
    parser.add_argument("--namespace", default="todo", help="one cluster per namespace")
    parser.add_argument("--add", action="append", default=[], metavar="TEXT")
    parser.add_argument("--until", type=int, metavar="N",
                        help="exit once the list holds N items, printing it as JSON")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    store: ConfluxStore = create_store(reducer, enhancer=conflux_enhancer({
        "id": args.id,
        "members": args.members.split(","),
        "channel": {"name": "redis", "url": args.redis, "namespace": args.namespace},
        "methods": {"add": add, "done": done, "clear": clear},
    }))
    try:
        changed = threading.Event()

        def on_change() -> None:
            changed.set()
            if args.until is None:
                show(store)

        store.subscribe(on_change)
        for text in args.add:
            try:
                store.perform("add", [text, args.id], args.timeout).result(args.timeout)
            except ValueError as exc:  # another node added the same text first
                print(f"refused: {exc}")
        if args.until is None:
            interact(store, args.timeout)
            return 0
        deadline = time.monotonic() + args.timeout
        while len(store.get_state()["todos"]) < args.until:
            if time.monotonic() > deadline:
                print(f"timed out waiting for {args.until} items", file=sys.stderr)
                return 1
            changed.wait(0.1)
            changed.clear()
        print(json.dumps(store.get_state(), sort_keys=True))
        # linger a moment so that slower nodes still reach a majority for their items
        time.sleep(1.5)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        store.close(5)


if __name__ == "__main__":
    sys.exit(main())
