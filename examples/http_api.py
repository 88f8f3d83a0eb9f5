"""A small HTTP API over a Conflux store, with asyncio: three replicas of a to-do list in
this process (the memory channel), and one server per replica.

    .venv/bin/python examples/http_api.py --port 8080
    curl -s localhost:8080/items                                   # a linearizable read
    curl -s -X POST localhost:8080/items -d '{"text": "milk"}'     # dispatch, then 201
    curl -s localhost:8081/items                                   # any replica answers

Every handler awaits the store (`aread`, `adispatch`): the event loop never blocks on a
future. Ports are --port, --port + 1 and --port + 2 (0 picks free ones and prints them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import orjson
from pydux import create_store

from conflux_redux import ConfluxStore, conflux_enhancer


def reducer(state: Any, action: dict[str, Any]) -> Any:
    items = state if state is not None else []
    if action["type"] == "add":
        return [*items, action["text"]]
    return items


def make_store(node_id: str, namespace: str) -> ConfluxStore:
    store: ConfluxStore = create_store(reducer, enhancer=conflux_enhancer({
        "id": node_id, "members": ["a", "b", "c"],
        "channel": {"name": "memory", "namespace": namespace}}))
    return store


async def handle(store: ConfluxStore, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    """One HTTP/1.1 request (the connection closes after it)."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if
                       ": " in line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        status, reply = await route(store, method, path, body)
    except (ValueError, KeyError, asyncio.IncompleteReadError) as exc:
        status, reply = 400, {"error": str(exc) or type(exc).__name__}
    except TimeoutError as exc:
        status, reply = 503, {"error": str(exc)}
    data = orjson.dumps(reply)
    writer.write(f"HTTP/1.1 {status} {'OK' if status < 400 else 'Error'}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                 "Connection: close\r\n\r\n".encode() + data)
    await writer.drain()
    writer.close()


async def route(store: ConfluxStore, method: str, path: str, body: bytes) -> tuple[int, Any]:
    if path != "/items":
        return 404, {"error": f"no route {path}"}
    if method == "GET":
        return 200, await store.aread(timeout=5)
    if method == "POST":
        text = orjson.loads(body)["text"]
        if not isinstance(text, str):
            raise ValueError('"text" must be a string')
        return 201, await store.adispatch({"type": "add", "text": text}, timeout=5)
    return 405, {"error": f"{method} is not allowed"}


async def serve(port: int, namespace: str = "http-api") -> None:
    stores = [make_store(i, namespace) for i in "abc"]
    servers = []
    try:
        for k, store in enumerate(stores):
            server = await asyncio.start_server(
                lambda r, w, s=store: handle(s, r, w), "127.0.0.1", port + k if port else 0)
            servers.append(server)
            print(f"{store.node.id}: http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
                  "/items", flush=True)
        await asyncio.gather(*(s.serve_forever() for s in servers))
    finally:
        for s in servers:
            s.close()
        for store in stores:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
