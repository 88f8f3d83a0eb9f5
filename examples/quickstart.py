"""Conflux quick start: three nodes in one process share a list, and the leader fails.

    python examples/quickstart.py

Each node is a pydux store made distributed by `conflux_enhancer`. Actions go through a
Raft log (here over the in-process memory channel); a node applies an action only once
a majority has committed it. Halfway through, the leader is closed while the other
nodes go on dispatching: a new leader is elected and no action is lost or doubled.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from pydux import create_store

from conflux_redux import ConfluxStore, conflux_enhancer

WAIT = 15.0  # seconds: the most any step may take


def reducer(state: Any, action: dict[str, Any]) -> Any:
    """The seed's reducer: a list that every action appends to."""
    state = [] if state is None else state
    if action["type"] == "append":
        return [*state, action["item"]]
    return state


def append(state: Any, item: str) -> dict[str, Any]:
    """A method (an action creator that runs on the leader, against its state)."""
    return {"type": "append", "item": item}


def make_node(node_id: str, members: list[str]) -> ConfluxStore:
    store: ConfluxStore = create_store(reducer, enhancer=conflux_enhancer({
        "id": node_id,
        "members": members,  # or "cluster_size": 3
        "channel": {"name": "memory", "namespace": "quickstart"},
        "methods": {"append": append},
    }))
    return store


def wait_for_leader(stores: list[ConfluxStore]) -> ConfluxStore:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        leaders = [s for s in stores if s.node.is_leader()]
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.02)
    raise SystemExit("no leader was elected")


def main() -> int:
    members = ["a", "b", "c"]
    stores = [make_node(i, members) for i in members]
    try:
        # perform a method: it runs on the leader; the future resolves once the action
        # is committed and applied on this node
        print("performed:", stores[0].perform("append", ["foo"]).result(WAIT))
        # or dispatch an action directly
        print("dispatched:", stores[1].dispatch({"type": "append", "item": "bar"}).result(WAIT))

        leader = wait_for_leader(stores)
        survivors = [s for s in stores if s is not leader]
        watcher = survivors[0]
        watcher.subscribe(lambda: print(f"  {watcher.node.id} sees:",
                                        " ".join(watcher.get_state())))

        print(f"leader is {leader.node.id}; closing it while {survivors[0].node.id} and "
              f"{survivors[1].node.id} keep dispatching")
        futures = []
        for n in range(6):
            for s in survivors:
                futures.append(s.dispatch({"type": "append", "item": f"{s.node.id}{n}"}))
            if n == 2:
                leader.close()
            time.sleep(0.05)
        for f in futures:
            f.result(WAIT)  # every dispatch commits exactly once, despite the failover

        new_leader = wait_for_leader(survivors)
        print(f"new leader is {new_leader.node.id}")
        deadline = time.monotonic() + WAIT
        while survivors[0].get_state() != survivors[1].get_state():
            if time.monotonic() > deadline:
                raise SystemExit("the survivors disagree")
            time.sleep(0.02)
        for s in stores:
            print(f"{s.node.id}{' (closed)' if s is leader else ''}:", s.get_state())
        final = survivors[0].get_state()
        expected = ["foo", "bar"] + [f"{s.node.id}{n}" for n in range(6) for s in survivors]
        if sorted(final) != sorted(expected):
            print("unexpected final state", file=sys.stderr)
            return 1
        print(f"all {len(final)} actions applied once, in the same order on every node")
        return 0
    finally:
        for s in stores:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
