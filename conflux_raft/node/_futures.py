"""Settling futures that several threads may race to settle."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any


def settle(fut: Future[Any], result: Any = None, exc: BaseException | None = None) -> bool:
    """Resolve `fut` unless it already is (a timeout or close may have won the race);
    return whether this call settled it."""
    if fut.done():
        return False
    try:
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
    except Exception:  # InvalidStateError: settled concurrently
        return False
    return True
