"""The examples run as the README shows them (the memory-channel ones; todo.py, which
needs Redis, is run by test_redux_redis.py and test_todo.py)."""

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


def test_the_http_api_example_serves_reads_and_dispatches_from_every_replica() -> None:
    import json
    import urllib.request

    proc = subprocess.Popen([sys.executable, str(EXAMPLES / "http_api.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=EXAMPLES.parent)
    try:
        assert proc.stdout is not None
        urls = [proc.stdout.readline().split(": ", 1)[1].strip() for _ in range(3)]

        def call(url: str, body: dict[str, str] | None = None) -> tuple[int, object]:
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())

        assert call(urls[0], {"text": "milk"}) == (201, {"type": "add", "text": "milk"})
        assert call(urls[2], {"text": "eggs"})[0] == 201
        for url in urls:  # linearizable: every replica sees both at once
            assert call(url) == (200, ["milk", "eggs"])
        try:
            call(urls[1], {"text": 3})  # type: ignore[dict-item]
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
        else:
            raise AssertionError("a bad body was accepted")
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
