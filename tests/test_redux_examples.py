"""The examples run as the README shows them (the memory-channel ones; todo.py, which
needs Redis, is run by test_redux_redis.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=EXAMPLES.parent)


def test_quickstart_runs_and_survives_the_failover() -> None:
    proc = run(str(EXAMPLES / "quickstart.py"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "new leader is" in proc.stdout
    assert "applied once, in the same order on every node" in proc.stdout


def test_counter_is_exact_and_its_unsafe_twin_is_not() -> None:
    proc = run(str(EXAMPLES / "counter.py"), "--nodes", "3", "--threads", "3",
               "--increments", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "count = 90, expected 90" in proc.stdout
    proc = run(str(EXAMPLES / "counter.py"), "--nodes", "3", "--threads", "3",
               "--increments", "10", "--unsafe")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "count = 90," not in proc.stdout and "lost" in proc.stdout
