"""An atomic counter: many nodes and threads increment one shared count through
`perform`, and the final count is exact.

    python examples/counter.py                      # 5 nodes in one process, memory channel
    python examples/counter.py --redis redis://127.0.0.1:6379/0
    python examples/counter.py --unsafe             # read-then-dispatch: loses updates

The `incr` method reads the count from the leader's provisional state and returns
`{"type": "set", "value": count + 1}`: a read-modify-write. It is exact because
methods run one at a time on the leader, against its log including what is not yet
committed. `--unsafe` does the same read-modify-write outside `perform`, from each
node's committed state, and shows the updates it loses.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from typing import Any

from pydux import create_store

from conflux_redux import ConfluxStore, conflux_enhancer

WAIT = 30.0


def reducer(state: Any, action: dict[str, Any]) -> Any:
    state = {"count": 0} if state is None else state
    if action["type"] == "set":
        return {"count": action["value"]}
    return state


def incr(state: Any) -> dict[str, Any]:
    return {"type": "set", "value": state["count"] + 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=4, help="threads per node")
    parser.add_argument("--increments", type=int, default=25, help="per thread")
    parser.add_argument("--redis", metavar="URL", help="use the Redis channel at URL")
    parser.add_argument("--unsafe", action="store_true",
                        help="read the committed state and dispatch, instead of perform")
    args = parser.parse_args(argv)

    channel: dict[str, Any] = {"name": "memory", "namespace": "counter"}
    if args.redis:
        channel = {"name": "redis", "url": args.redis,
                   "namespace": f"counter-{uuid.uuid4().hex[:8]}"}
    ids = [f"node{i}" for i in range(args.nodes)]
    stores: list[ConfluxStore] = [
        create_store(reducer, enhancer=conflux_enhancer({
            "id": node_id, "members": ids, "channel": channel, "methods": {"incr": incr},
        }))
        for node_id in ids
    ]
    errors: list[BaseException] = []
    barrier = threading.Barrier(args.nodes * args.threads)

    def work(store: ConfluxStore) -> None:
        try:
            barrier.wait(WAIT)
            for _ in range(args.increments):
                if args.unsafe:
                    value = store.get_state()["count"]
                    store.dispatch({"type": "set", "value": value + 1}).result(WAIT)
                else:
                    store.perform("incr", timeout=WAIT).result(WAIT)
        except BaseException as exc:
            errors.append(exc)

    try:
        started = time.monotonic()
        threads = [threading.Thread(target=work, args=(s,))
                   for s in stores for _ in range(args.threads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        if errors:
            print(f"{len(errors)} increments failed, e.g. {errors[0]!r}", file=sys.stderr)
            return 1
        expected = args.nodes * args.threads * args.increments
        deadline = time.monotonic() + WAIT
        while len({s.get_state()["count"] for s in stores}) != 1:
            if time.monotonic() > deadline:
                print("the nodes disagree", [s.get_state() for s in stores], file=sys.stderr)
                return 1
            time.sleep(0.02)
        count = stores[0].get_state()["count"]
        print(f"{args.nodes} nodes x {args.threads} threads x {args.increments} increments "
              f"in {elapsed:.1f} s: count = {count}, expected {expected}; every node agrees")
        if args.unsafe:
            print(f"read-then-dispatch lost {expected - count} updates")
            return 0
        return 0 if count == expected else 1
    finally:
        for s in stores:
            s.close()


if __name__ == "__main__":
    sys.exit(main())
