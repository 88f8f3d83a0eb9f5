"""Shared fixtures: a private redis-server (real, never a fake) and a namespace per test."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator

import pytest

from conflux_raft import MemoryHub
from conflux_raft.testing import RedisServer
from conflux_raft.testing import find_redis_server as find_binary

__all__ = ["RedisServer"]

def find_redis_server() -> str:
    try:
        return find_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session; see `RedisServer`."""
    server = RedisServer(find_redis_server(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGTERM)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The session server's URL, running (and resumed) before and after the test."""
    redis_server.ensure_running()
    yield redis_server.url
    redis_server.ensure_running()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace no other test uses; its memory hub is forgotten afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    MemoryHub.reset(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real redis-server with `redis` (`-m "not redis"`)."""
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)
