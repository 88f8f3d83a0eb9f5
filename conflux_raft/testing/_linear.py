"""A linearizability checker (Wing and Gong's search, with memoization as in Lowe's
and Porcupine's): is there one order of the operations, respecting real time, that a
sequential model accepts?"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation, called at `start` and answered with `result` at `end`.

    `end` is None for an operation that never returned: it may have taken effect at any
    time after `start`, or never, and its result is not checked.
    """

    kind: str
    arg: Any = None
    result: Any = None
    start: float = 0.0
    end: float | None = None
    client: str = ""


class Model(Protocol, Generic[S]):
    """A sequential specification."""

    def init(self) -> S: ...

    def step(self, state: S, op: Op) -> tuple[bool, S]:
        """Apply `op`: whether its result is possible from `state`, and the next state."""
        ...


class Register:
    """A register: "write" arg; "read" -> value; "cas" (old, new) -> bool."""

    def init(self) -> Any:
        return None

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        done = op.end is not None
        if op.kind == "write":
            return True, op.arg
        if op.kind == "read":
            return not done or op.result == state, state
        if op.kind == "cas":
            old, new = op.arg
            hit = state == old
            return not done or op.result == hit, new if hit else state
        raise ValueError(f"unknown register operation {op.kind!r}")


class AppendLog:
    """An append-only list: "append" arg; "read" -> the whole list."""

    def init(self) -> tuple[Any, ...]:
        return ()

    def step(self, state: tuple[Any, ...], op: Op) -> tuple[bool, tuple[Any, ...]]:
        if op.kind == "append":
            return True, (*state, op.arg)
        if op.kind == "read":
            return op.end is None or tuple(op.result) == state, state
        raise ValueError(f"unknown log operation {op.kind!r}")


def linearize(history: Sequence[Op], model: Model[S]) -> list[Op] | None:
    """An order of the operations that respects real time and `model`, or None.

    Operations that never returned appear in the order only where they took effect.
    """
    ops = list(history)
    finished = [i for i, op in enumerate(ops) if op.end is not None]
    seen: set[tuple[frozenset[int], S]] = set()
    stack: list[tuple[frozenset[int], S, tuple[int, ...]]] = [(frozenset(), model.init(), ())]
    while stack:
        done, state, order = stack.pop()
        left = [i for i in finished if i not in done]
        if not left:
            return [ops[i] for i in order]
        if (done, state) in seen:
            continue
        seen.add((done, state))
        horizon = min(ops[i].end or 0.0 for i in left)  # no finished op may be overtaken
        for i in reversed(range(len(ops))):
            if i in done or ops[i].start > horizon:
                continue
            ok, nxt = model.step(state, ops[i])
            if ok:
                stack.append((done | {i}, nxt, (*order, i)))
    return None


def is_linearizable(history: Sequence[Op], model: Model[S]) -> bool:
    return linearize(history, model) is not None
