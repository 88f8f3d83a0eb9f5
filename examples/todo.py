"""A replicated todo list: each node is a separate process, talking over Redis Streams.

Start three nodes, in three terminals (any order; a node waits for a majority):

    python examples/todo.py --redis redis://127.0.0.1:6379/0 --id a --members a,b,c --data todo-data
    python examples/todo.py --redis redis://127.0.0.1:6379/0 --id b --members a,b,c --data todo-data
    python examples/todo.py --redis redis://127.0.0.1:6379/0 --id c --members a,b,c --data todo-data

then type `add buy milk`, `done 1`, `clear`, `list`, `help` or `quit` in any of them. Each
node prints the list once it has caught up with the cluster, then only what changes
(`+` added, `x` done, `-` cleared) and who leads. Stop one node (Ctrl-C, even the leader)
and the other two go on. With `--data DIR` each node keeps its log in `DIR/<id>`: stop all
three, start them again, and the list is still there (printed once, not replayed).

Scripted, for tests: `--add TEXT` (repeatable) adds items at start, `--until N` waits
until the list holds N items, prints it as JSON on the last line and exits.

The methods check against the leader's provisional state, so two nodes adding the same
text at the same moment get one item and one refusal, and ids never collide.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from pydux import create_store

from conflux_redux import ClosedError, ConfluxStore, conflux_enhancer

HELP = """\
commands:
  add TEXT   add a todo
  done N     mark todo #N done
  clear      remove the todos that are done
  list       print the list and the leader
  help       this text
  quit       leave (the other nodes go on)"""


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
        return ValueError(f"there is no todo #{todo_id} (type list to see them)")
    if todo["done"]:
        return None  # nothing to do
    return {"type": "done", "id": todo_id}


def clear(state: Any) -> Any:
    return {"type": "clear"} if any(t["done"] for t in state["todos"]) else None


class Screen:
    """What a node prints: the list once it has caught up, then only the changes."""

    def __init__(self, store: ConfluxStore) -> None:
        self.store = store
        self.lock = threading.Lock()  # one writer at a time; guards `shown`
        self.shown: dict[int, dict[str, Any]] | None = None  # None until caught up

    def say(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)

    def leader(self) -> str:
        node = self.store.node
        return f"leader {node.leader_id} (term {node.term})" if node.leader_id else "no leader"

    def listing(self, todos: list[dict[str, Any]]) -> str:
        lines = [f"--- {self.store.node.id}: {len(todos)} todo(s), {self.leader()}"]
        lines += [f"  [{'x' if t['done'] else ' '}] #{t['id']} {t['text']}  (from {t['by']})"
                  for t in todos]
        return "\n".join(lines)

    def catch_up(self, timeout: float, stop: threading.Event) -> None:
        """Wait for a linearizable read (this node has applied everything committed so
        far, a restart's replay included), then print the list once."""
        waiting_said = False
        while not stop.is_set():
            try:
                self.store.read(timeout).result(timeout + 1)
                break
            except TimeoutError:
                if not waiting_said:
                    members = ",".join(self.store.node.voters or ())
                    self.say(f"... waiting for a majority of {members or 'the members'}")
                    waiting_said = True
            except ClosedError:
                return
            except Exception as exc:  # not expected: say so, and try again
                self.say(f"... could not catch up yet ({type(exc).__name__}: {exc})")
                stop.wait(1.0)
        if stop.is_set():
            return
        with self.lock:
            todos = self.store.get_state()["todos"]
            self.shown = {t["id"]: t for t in todos}
            print(self.listing(todos), flush=True)

    def changed(self) -> None:
        """A listener: print what changed since the last print (nothing before catch_up)."""
        with self.lock:
            if self.shown is None:
                return
            now = {t["id"]: t for t in self.store.get_state()["todos"]}
            for i, t in now.items():
                old = self.shown.get(i)
                if old is None:
                    print(f"+ #{i} {t['text']}  (from {t['by']})", flush=True)
                elif t["done"] and not old["done"]:
                    print(f"x #{i} {t['text']}", flush=True)
            for i, t in self.shown.items():
                if i not in now:
                    print(f"- #{i} {t['text']}", flush=True)
            self.shown = now


def interact(store: ConfluxStore, screen: Screen, timeout: float) -> None:
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        try:
            if cmd == "add":
                if not rest:
                    screen.say("add needs a text: add buy milk")
                    continue
                store.perform("add", [rest, store.node.id], timeout).result(timeout)
            elif cmd == "done":
                if not rest.isdigit():
                    screen.say(f"done needs a todo number: done 1 (got {rest or 'nothing'!r})")
                    continue
                if store.perform("done", [int(rest)], timeout).result(timeout) is None:
                    screen.say(f"#{int(rest)} is already done")
            elif cmd == "clear":
                if store.perform("clear", [], timeout).result(timeout) is None:
                    screen.say("nothing to clear: no todo is done")
            elif cmd == "list":
                screen.say(screen.listing(store.get_state()["todos"]))
            elif cmd in ("help", "?"):
                screen.say(HELP)
            elif cmd in ("quit", "exit"):
                return
            elif cmd:
                screen.say(f"unknown command {cmd!r}: type help for the commands")
        except TimeoutError:
            screen.say(f"timed out after {timeout:g} s ({screen.leader()}); "
                       "it may still commit later")
        except ValueError as exc:  # a method's refusal, on whichever node leads
            screen.say(f"refused: {exc}")
        except ClosedError:
            return
        except Exception as exc:
            screen.say(f"failed: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", metavar="URL", required=True)
    parser.add_argument("--id", required=True, help="this node's id, one of --members")
    parser.add_argument("--members", required=True, help="every node's id: a,b,c")
    parser.add_argument("--namespace", default="todo", help="one cluster per namespace")
    parser.add_argument("--data", metavar="DIR",
                        help="keep each node's log on disk, in DIR/<id> (else in memory)")
    parser.add_argument("--add", action="append", default=[], metavar="TEXT")
    parser.add_argument("--until", type=int, metavar="N",
                        help="exit once the list holds N items, printing it as JSON")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv)

    storage = ({"name": "file", "path": os.path.join(args.data, args.id)} if args.data
               else {"name": "memory"})
    store: ConfluxStore = create_store(reducer, enhancer=conflux_enhancer({
        "id": args.id,
        "members": args.members.split(","),
        "channel": {"name": "redis", "url": args.redis, "namespace": args.namespace},
        "storage": storage,
        "methods": {"add": add, "done": done, "clear": clear},
    }))
    stop = threading.Event()
    try:
        changed = threading.Event()
        screen = Screen(store)
        if args.until is None:
            where = f", data in {storage['path']}" if args.data else ", in memory"
            screen.say(f"todo node {args.id} of {args.members}{where}; type help for the "
                       "commands")
            store.node.on("leader_elected",
                          lambda leader, term: screen.say(f"* leader: {leader} (term {term})"))
            store.subscribe(screen.changed)
            threading.Thread(target=screen.catch_up, args=(args.timeout, stop),
                             daemon=True).start()
        else:
            store.subscribe(changed.set)
        for text in args.add:
            try:
                store.perform("add", [text, args.id], args.timeout).result(args.timeout)
            except ValueError as exc:  # another node added the same text first
                screen.say(f"refused: {exc}")
        if args.until is None:
            interact(store, screen, args.timeout)
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
        stop.set()
        store.close(5)


if __name__ == "__main__":
    sys.exit(main())
