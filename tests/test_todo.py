"""examples/todo.py as a user runs it: separate processes over the real redis-server,
typed at through stdin, killed with SIGKILL and started again from their --data."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TODO = Path(__file__).resolve().parent.parent / "examples" / "todo.py"
WAIT = 30.0


class Todo:
    """One todo.py process; its output lines are collected by a thread."""

    def __init__(self, node_id: str, members: str, redis_url: str, namespace: str,
                 data: Path | None) -> None:
        self.id = node_id
        extra = [] if data is None else ["--data", str(data)]
        self.proc = subprocess.Popen(
            [sys.executable, str(TODO), "--redis", redis_url, "--id", node_id, "--members",
             members, "--namespace", namespace, "--timeout", "10", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self._cv = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def type(self, line: str) -> int:
        """Send a line; return how many output lines there were before it."""
        with self._cv:
            mark = len(self.lines)
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return mark

    def wait_for(self, what: str | Callable[[str], bool], since: int = 0,
                 timeout: float = WAIT) -> str:
        """The first line from `since` on that contains `what` (or satisfies it)."""
        test = what if callable(what) else (lambda line: what in line)
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines[since:]:
                    if test(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.id}: no line with {what!r} in {timeout} s; "
                                         f"output:\n" + "\n".join(self.lines))
                self._cv.wait(left)

    def output(self) -> list[str]:
        with self._cv:
            return list(self.lines)

    def kill(self) -> None:
        """SIGKILL (if still running), then reap it and close the pipes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):  # what we typed was never read
                    pipe.close()

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.type("quit")
            try:
                assert self.proc.wait(15) == 0, self.output()
            finally:
                self.kill()


@pytest.fixture
def start(redis_url: str, namespace: str) -> Iterator[Callable[..., list[Todo]]]:
    made: list[Todo] = []

    def run(ids: str, data: Path | None = None) -> list[Todo]:
        todos = [Todo(i, ids, redis_url, namespace, data) for i in ids.split(",")]
        made.extend(todos)
        return todos

    yield run
    for todo in made:
        todo.kill()


def test_the_list_survives_killing_every_node_and_is_printed_once(
        start: Callable[..., list[Todo]], tmp_path: Path) -> None:
    data = tmp_path / "data"
    nodes = start("a,b,c", data)
    for node in nodes:
        node.wait_for(f"--- {node.id}: 0 todo(s)")  # caught up: the (empty) list, once
    a, b, c = nodes
    a.type("add buy milk")
    for node in nodes:
        node.wait_for("+ #1 buy milk  (from a)")
    b.type("add walk the dog")
    c.type("done 1")
    for node in nodes:
        node.wait_for("+ #2 walk the dog  (from b)")
        node.wait_for("x #1 buy milk")
        node.wait_for(lambda line: line.startswith("* leader: "))  # who leads is shown
    for node in nodes:
        node.kill()
    assert sorted(p.name for p in data.iterdir()) == ["a", "b", "c"]  # one directory each

    again = start("a,b,c", data)
    for node in again:
        node.wait_for(f"--- {node.id}: 2 todo(s), leader ")
        node.wait_for("  [x] #1 buy milk  (from a)")
        node.wait_for("  [ ] #2 walk the dog  (from b)")
    again[1].type("add eggs")
    for node in again:
        node.wait_for("+ #3 eggs  (from b)")
    for node in again:
        out = node.output()
        listings = [line for line in out if line.startswith("--- ")]
        assert len(listings) == 1, out  # the list once, at start
        changes = [line for line in out if line[:2] in ("+ ", "x ", "- ")]
        assert changes == ["+ #3 eggs  (from b)"], out  # no old state printed as new
    for node in again:
        node.quit()


def test_help_and_clear_messages_for_bad_input(start: Callable[..., list[Todo]]) -> None:
    (node,) = start("solo")
    node.wait_for("--- solo: 0 todo(s), leader solo")
    node.wait_for("type help for the commands")
    expected = [
        ("help", "done N     mark todo #N done"),
        ("add", "add needs a text: add buy milk"),
        ("add   ", "add needs a text"),
        ("done abc", "done needs a todo number: done 1 (got 'abc')"),
        ("done", "done needs a todo number: done 1 (got 'nothing')"),
        ("done 99", "refused: there is no todo #99 (type list to see them)"),
        ("frobnicate 3", "unknown command 'frobnicate': type help for the commands"),
        ("clear", "nothing to clear: no todo is done"),
        ("add milk", "+ #1 milk  (from solo)"),
        ("add milk", "refused: 'milk' is already on the list"),
        ("done 1", "x #1 milk"),
        ("done 1", "#1 is already done"),
        ("list", "  [x] #1 milk  (from solo)"),
        ("clear", "- #1 milk"),
    ]
    for typed, answer in expected:
        mark = node.type(typed)
        node.wait_for(answer, since=mark, timeout=10)
    assert not any(line.startswith("?") or "Traceback" in line for line in node.output())
    node.quit()
