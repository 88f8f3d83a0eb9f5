"""Bounded polling for the tests: they wait for a condition, never for a duration."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
             every: float = 0.01) -> None:
    """Poll `cond` every `every` seconds until it holds; fail naming `what` after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
