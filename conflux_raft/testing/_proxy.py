"""A TCP proxy for fault tests: put it between a process and its server, then cut, heal
or slow the link while both keep running."""

from __future__ import annotations

import contextlib
import errno
import queue
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

__all__ = ["TcpProxy"]

_CHUNK = 65536
_HIGH_WATER = 4 << 20  # bytes held for one direction before the proxy stops reading it
_CALL_TIMEOUT = 5.0
_IDLE = 0.5  # longest select() when nothing is due


class _Call:
    """A control call waiting to run on the proxy's thread."""

    __slots__ = ("done", "error", "fn")

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.error: Exception | None = None


class _Pipe:
    """One direction of a connection: what was read from `src` and is owed to `dst`."""

    __slots__ = ("dst", "eof", "out", "pending", "pending_bytes", "src")

    def __init__(self, src: socket.socket, dst: socket.socket | None) -> None:
        self.src = src
        self.dst = dst
        self.pending: deque[tuple[float, bytes]] = deque()  # (due, chunk), oldest first
        self.pending_bytes = 0
        self.out = bytearray()  # due now, being written to dst
        self.eof = False  # src has ended: close the connection once out and pending drain

    def held(self) -> int:
        return self.pending_bytes + len(self.out)


class _Conn:
    """A client's connection and, unless it is held silent, its own one to the target."""

    __slots__ = ("client", "connecting", "down", "masks", "server", "silent", "up")

    def __init__(self, client: socket.socket, server: socket.socket | None) -> None:
        self.client = client
        self.server = server
        self.connecting = server is not None
        self.silent = server is None  # a blackhole: read and discard both ways
        self.up = _Pipe(client, server)  # client -> target
        self.down = _Pipe(server, client) if server is not None else None  # target -> client
        self.masks: dict[socket.socket, int] = {}

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.client, self.server) if s is not None]


class TcpProxy:
    """Forwards TCP connections from 127.0.0.1:`port` to (target_host, target_port), both
    ways, on one thread (a selector). Each client connection gets its own connection to
    the target; when the target refuses or ends one, the client's ends too.

    `cut()` partitions the link, as a blackhole by default: every open connection goes
    silent (what either side sends is read and discarded; nothing is forwarded, nothing
    is closed), and new connections are accepted and held the same way, never forwarded.
    A client notices only through its own timeouts. `heal()` closes the connections held
    silent (bytes were lost in them, so they cannot go on) and forwards new ones again.
    `cut(mode="reset")` is the gentler fault: open connections are reset (RST) and new
    ones are reset as soon as they are accepted, until `heal()`.

    `delay(seconds)` holds every chunk read, either way, that long before it is written
    on (order is kept); `delay(0)` stops adding latency. `close()` ends everything, once,
    and never blocks for long; after it, `cut`, `heal` and `delay` raise RuntimeError.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._conns: set[_Conn] = set()
        self._cut: Literal["blackhole", "reset"] | None = None
        self._delay = 0.0
        self._stopping = False
        self._close_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"tcp-proxy-{self.port}",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"TcpProxy(127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]})"

    # ---- control, from any thread ----------------------------------------------------

    def cut(self, mode: Literal["blackhole", "reset"] = "blackhole") -> None:
        """Partition the link until `heal()` (see the class docstring for the modes)."""
        if mode not in ("blackhole", "reset"):
            raise ValueError(f"mode must be 'blackhole' or 'reset', not {mode!r}")
        self._call(lambda: self._do_cut(mode))

    def heal(self) -> None:
        """End a cut: connections held silent are closed, new ones are forwarded."""
        self._call(self._do_heal)

    def delay(self, seconds: float) -> None:
        """Add `seconds` of latency to every chunk forwarded from now on (0 clears it)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError("delay: seconds >= 0")

        def set_delay() -> None:
            self._delay = float(seconds)

        self._call(set_delay)

    @property
    def connections(self) -> int:
        """Client connections open now (held silent ones included)."""
        return len(self._conns)

    def close(self) -> None:
        """Close every connection and the listening socket; stop the thread. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stopping = True
        self._wake()
        self._thread.join(_CALL_TIMEOUT)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the proxy's thread and wait until it ran: a cut is in force when
        `cut()` returns."""
        if self._closed or not self._thread.is_alive():
            raise RuntimeError(f"{self!r} is closed")
        call = _Call(fn)
        self._calls.put(call)
        self._wake()
        if not call.done.wait(_CALL_TIMEOUT):
            raise RuntimeError(f"{self!r} did not answer")
        if call.error is not None:
            raise call.error

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # already awake (a full buffer), or closing
            self._wake_w.send(b"x")

    # ---- the proxy's thread ----------------------------------------------------------

    def _do_cut(self, mode: Literal["blackhole", "reset"]) -> None:
        self._cut = mode
        for conn in list(self._conns):
            if mode == "reset":
                self._drop(conn, reset=True)
            else:
                self._silence(conn)

    def _do_heal(self) -> None:
        self._cut = None
        for conn in list(self._conns):
            if conn.silent:
                self._drop(conn)

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._sel.select(self._timeout()):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        self._drain_calls()
                    else:
                        conn, sock = key.data
                        if conn in self._conns:
                            self._ready(conn, sock, mask)
                self._forward_due()
        finally:
            for conn in list(self._conns):
                self._drop(conn)
            self._sel.close()
            for sock in (self._listener, self._wake_r, self._wake_w):
                sock.close()
            while not self._calls.empty():  # release anyone still waiting
                self._calls.get_nowait().done.set()

    def _timeout(self) -> float:
        due = [p.pending[0][0] for c in self._conns for p in (c.up, c.down)
               if p is not None and p.pending]
        if not due:
            return _IDLE
        return min(max(min(due) - time.monotonic(), 0.0), _IDLE)

    def _drain_calls(self) -> None:
        with contextlib.suppress(OSError):
            while self._wake_r.recv(4096):
                pass
        while not self._calls.empty():
            call = self._calls.get_nowait()
            try:
                call.fn()
            except Exception as exc:  # the caller raises it
                call.error = exc
            finally:
                call.done.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the client gave up: try later
                return
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._cut == "reset":
                _reset(client)
                continue
            server: socket.socket | None = None
            if self._cut is None:
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.setblocking(False)
                server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                err = server.connect_ex(self.target)
                if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
                    server.close()
                    client.close()
                    continue
            conn = _Conn(client, server)
            self._conns.add(conn)
            self._update(conn)

    def _ready(self, conn: _Conn, sock: socket.socket, mask: int) -> None:
        if conn.connecting and sock is conn.server:
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                self._drop(conn)  # the target refused: so does the proxy
                return
            conn.connecting = False
            self._update(conn)
            return
        if mask & selectors.EVENT_READ and not self._read(conn, sock):
            return
        if mask & selectors.EVENT_WRITE and conn in self._conns:
            pipe = conn.down if sock is conn.client else conn.up
            if pipe is not None:
                self._write(conn, pipe)

    def _read(self, conn: _Conn, sock: socket.socket) -> bool:
        """Read one chunk from `sock`; False if the connection was dropped."""
        try:
            data = sock.recv(_CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self._drop(conn)
            return False
        if conn.silent:
            if not data:  # a side left: nothing to deliver anyway
                self._drop(conn)
                return False
            return True
        pipe = conn.up if sock is conn.client else conn.down
        assert pipe is not None
        if not data:
            pipe.eof = True
            self._settle(conn, pipe)
            return conn in self._conns
        if self._delay == 0 and not pipe.pending:
            pipe.out += data
            self._write(conn, pipe)
        else:
            due = time.monotonic() + self._delay
            if pipe.pending:
                due = max(due, pipe.pending[-1][0])
            pipe.pending.append((due, data))
            pipe.pending_bytes += len(data)
        if conn in self._conns:
            self._update(conn)
        return conn in self._conns

    def _write(self, conn: _Conn, pipe: _Pipe) -> None:
        if pipe.out and pipe.dst is not None and not conn.connecting:
            try:
                sent = pipe.dst.send(pipe.out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._drop(conn)
                return
            del pipe.out[:sent]
        self._settle(conn, pipe)
        if conn in self._conns:
            self._update(conn)

    def _settle(self, conn: _Conn, pipe: _Pipe) -> None:
        """Close the connection once an ended direction has delivered all it owed."""
        if pipe.eof and not pipe.out and not pipe.pending:
            self._drop(conn)

    def _forward_due(self) -> None:
        now = time.monotonic()
        for conn in list(self._conns):
            for pipe in (conn.up, conn.down):
                if pipe is None or not pipe.pending or pipe.pending[0][0] > now:
                    continue
                while pipe.pending and pipe.pending[0][0] <= now:
                    chunk = pipe.pending.popleft()[1]
                    pipe.pending_bytes -= len(chunk)
                    pipe.out += chunk
                if conn in self._conns:
                    self._write(conn, pipe)

    def _update(self, conn: _Conn) -> None:
        """(Re)register each socket of `conn` for what it must do now."""
        for sock in conn.sockets():
            if conn.silent:
                mask = selectors.EVENT_READ
            elif sock is conn.server and conn.connecting:
                mask = selectors.EVENT_WRITE
            elif conn.connecting:  # the client waits until its target connection is up
                mask = 0
            else:
                reading = conn.up if sock is conn.client else conn.down
                writing = conn.down if sock is conn.client else conn.up
                assert reading is not None and writing is not None
                mask = 0
                if not reading.eof and reading.held() < _HIGH_WATER:
                    mask |= selectors.EVENT_READ
                if writing.out:
                    mask |= selectors.EVENT_WRITE
            old = conn.masks.get(sock, 0)
            if mask == old:
                continue
            if old == 0:
                self._sel.register(sock, mask, (conn, sock))
            elif mask == 0:
                self._sel.unregister(sock)
            else:
                self._sel.modify(sock, mask, (conn, sock))
            conn.masks[sock] = mask

    def _silence(self, conn: _Conn) -> None:
        """Turn `conn` into a blackhole: nothing it holds or reads is delivered."""
        conn.silent = True
        conn.connecting = False
        for pipe in (conn.up, conn.down):
            if pipe is not None:
                pipe.pending.clear()
                pipe.pending_bytes = 0
                pipe.out.clear()
                pipe.eof = False
        self._update(conn)

    def _drop(self, conn: _Conn, reset: bool = False) -> None:
        if conn not in self._conns:
            return
        self._conns.discard(conn)
        for sock in conn.sockets():
            if conn.masks.get(sock, 0):
                self._sel.unregister(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
        conn.masks.clear()


def _reset(sock: socket.socket) -> None:
    """Close with an RST rather than a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
