"""conflux_redux on the in-process hub: the store, methods, middleware and close, as
API.md and issue 4 describe them. Every test ends with every replica's state equal."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from pydux import create_store
from pydux.compose import compose
from pydux.log_middleware import log_middleware
from pydux.thunk_middleware import thunk_middleware

from conflux_raft import MemoryHub
from conflux_redux import (
    PERFORM,
    ClosedError,
    ConfigError,
    ConfluxConfig,
    ConfluxError,
    ConfluxStore,
    Overloaded,
    ProposalTimeout,
    RemoteError,
    apply_middleware,
    conflux_enhancer,
    methods_middleware,
    perform_action,
)

FAST: dict[str, Any] = {"election_timeout": (0.3, 0.6), "heartbeat_interval": 0.05}
WAIT = 10.0  # seconds: every wait in these tests is bounded by it


# ---- helpers (test_redux_redis.py imports them) ----------------------------------------


def wait_for(cond: Callable[[], Any], timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def list_reducer(state: Any, action: dict[str, Any]) -> Any:
    """The seed's quick example: a list every node appends to."""
    state = [] if state is None else state
    if action["type"] == "append":
        return [*state, action["item"]]
    if action["type"] == "boom":
        raise ValueError(f"boom {action.get('n')}")
    return state


def counter_reducer(state: Any, action: dict[str, Any]) -> Any:
    state = {"count": 0} if state is None else state
    if action["type"] == "incr":
        return {"count": state["count"] + 1}
    if action["type"] == "set":
        return {"count": action["value"]}
    return state


class Sold(Exception):
    """Not a builtin: it reaches a caller on another node as RemoteError."""


def m_append(state: Any, item: Any) -> Any:
    return {"type": "append", "item": item}


def m_append_unique(state: Any, item: Any) -> Any:
    if item in state:
        return ValueError(f"{item!r} is already there")
    return {"type": "append", "item": item}


def m_noop(state: Any) -> None:
    return None


def m_return_error(state: Any) -> Any:
    return ValueError("returned")


def m_raise(state: Any) -> Any:
    raise LookupError("raised")


def m_sold(state: Any) -> Any:
    raise Sold("sold out")


def m_bad_action(state: Any) -> Any:
    return {"no": "type"}


def m_boom(state: Any) -> Any:
    return {"type": "boom", "n": 1}


def m_incr(state: Any) -> Any:
    """Read-modify-write on the leader's provisional state: atomic."""
    return {"type": "set", "value": state["count"] + 1}


METHODS = {
    "append": m_append,
    "append_unique": m_append_unique,
    "noop": m_noop,
    "return_error": m_return_error,
    "raise": m_raise,
    "sold": m_sold,
    "bad_action": m_bad_action,
    "boom": m_boom,
    "incr": m_incr,
}


class Cluster:
    """n stores of one namespace, on `channel` (memory unless given)."""

    def __init__(
        self,
        namespace: str,
        n: int = 3,
        reducer: Callable[[Any, Any], Any] = list_reducer,
        channel: dict[str, Any] | None = None,
        enhance: Callable[[Any], Any] | None = None,
        **opts: Any,
    ) -> None:
        self.namespace = namespace
        self.ids = [f"n{i}" for i in range(n)]
        self.channel = {"name": "memory", **(channel or {}), "namespace": namespace}
        self.opts = {**FAST, "methods": METHODS, **opts}
        self.reducer = reducer
        self.enhance = enhance
        self.stores: list[ConfluxStore] = []
        try:
            for i in self.ids:
                self.stores.append(self.make(i))
        except BaseException:
            self.close()
            raise

    def make(self, node_id: str, reducer: Callable[[Any, Any], Any] | None = None) -> Any:
        enhancer = conflux_enhancer(
            {"id": node_id, "members": self.ids, "channel": self.channel, **self.opts})
        if self.enhance is not None:
            enhancer = self.enhance(enhancer)
        return create_store(reducer or self.reducer, enhancer=enhancer)

    @property
    def open_stores(self) -> list[ConfluxStore]:
        return [s for s in self.stores if not s.node.closed]

    def leader(self) -> ConfluxStore:
        stores = self.open_stores

        def one() -> bool:
            leaders = [s for s in stores if s.node.is_leader()]
            return len(leaders) == 1 and all(
                s.node.leader_id == leaders[0].node.id for s in stores)

        wait_for(one, what="one leader known to every open node")
        return next(s for s in stores if s.node.is_leader())

    def followers(self) -> list[ConfluxStore]:
        leader = self.leader()
        return [s for s in self.open_stores if s is not leader]

    def assert_replicas_equal(self) -> Any:
        """Every open store ends with the same committed (and provisional) state."""
        stores = self.open_stores
        commit = max(s.node.commit_index for s in stores)

        def same() -> bool:
            if any(s.node.status()["applied_index"] < commit for s in stores):
                return False
            states = [s.get_state() for s in stores]
            return all(x == states[0] for x in states) and all(
                s.get_provisional_state() == states[0] for s in stores)

        wait_for(same, what="every replica's state to be equal")
        return stores[0].get_state()

    def close(self) -> None:
        for s in self.stores:
            s.close(5)


@pytest.fixture
def cluster(namespace: str) -> Iterator[Cluster]:
    c = Cluster(namespace)
    yield c
    c.assert_replicas_equal()
    c.close()


def lost_updates(
    c: Cluster,
    increment: Callable[[ConfluxStore], bool],
    threads_per_node: int = 3,
    per_thread: int = 8,
    barrier_rounds: bool = False,
) -> int:
    """Run `increment(store)` from several threads on every node; return how many
    acknowledged increments are missing from the final, replicated count.

    `increment` returns True once acknowledged, False if its outcome is unknown (a
    TimeoutError: it may or may not have committed)."""
    stores = c.open_stores
    start = int(c.assert_replicas_equal()["count"])
    workers = [s for s in stores for _ in range(threads_per_node)]
    barrier = threading.Barrier(len(workers))
    errors: list[BaseException] = []
    acked: list[bool] = []

    def run(store: ConfluxStore) -> None:
        try:
            for _ in range(per_thread):
                if barrier_rounds:
                    barrier.wait(WAIT)
                acked.append(increment(store))
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(s,)) for s in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(4 * WAIT)
    assert not any(t.is_alive() for t in threads), "an incrementing thread hung"
    assert not errors, errors
    gained = int(c.assert_replicas_equal()["count"]) - start
    assert gained <= len(acked), "more increments than were made"
    return max(sum(acked) - gained, 0)


# ---- configuration ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "name"),
    [
        ({"id": "a", "cluster_size": 3, "bogus": 1}, "bogus"),
        ({"id": "a", "cluster_size": 3, "reduce": list_reducer}, "reduce"),
        ({"cluster_size": 3}, "id"),
        ({"id": "", "cluster_size": 3}, "id"),
        ({"id": "a"}, "cluster_size"),
        ({"id": "a", "cluster_size": 0}, "cluster_size"),
        ({"id": "a", "members": ["b", "c"]}, "members"),
        ({"id": "a", "cluster_size": 1, "channel": {"name": "carrier-pigeon"}}, "channel"),
        ({"id": "a", "cluster_size": 1, "election_timeout": (0.5, 0.1)}, "election_timeout"),
        ({"id": "a", "cluster_size": 1, "heartbeat_interval": 5}, "heartbeat_interval"),
        ({"id": "a", "cluster_size": 1, "storage": {"name": "floppy"}}, "storage"),
        ({"id": "a", "cluster_size": 1, "methods": {"m": 3}}, "methods.m"),
        ({"id": "a", "cluster_size": 1, "methods": [m_noop]}, "methods"),
        ({"id": "a", "cluster_size": 1, "max_pending": 0}, "max_pending"),
        ({"id": "a", "cluster_size": 1, "secret": 12}, "secret"),
    ],
)
def test_a_bad_config_fails_at_once_naming_the_key(cfg: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        conflux_enhancer(cfg)
    assert isinstance(info.value, ValueError)


def test_config_must_be_a_dict_or_a_confluxconfig() -> None:
    with pytest.raises(TypeError, match="config"):
        conflux_enhancer(["id", "a"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cluster_size"):
        ConfluxConfig(id="a", cluster_size=-1)


def test_a_confluxconfig_works_like_the_dict(namespace: str) -> None:
    cfg = ConfluxConfig(id="solo", cluster_size=1, channel={"name": "memory",
                        "namespace": namespace}, methods={"append": m_append}, **FAST)
    store = create_store(list_reducer, enhancer=conflux_enhancer(cfg))
    try:
        assert isinstance(store, ConfluxStore)
        assert store.perform("append", ["x"]).result(WAIT) == {"type": "append", "item": "x"}
        assert store.get_state() == ["x"]
        assert store["get_state"]() == ["x"] and store["node"] is store.node
    finally:
        store.close()


def test_initial_state_is_reduced_like_pydux(namespace: str) -> None:
    cfg = {"id": "solo", "cluster_size": 1, "channel": {"name": "memory",
           "namespace": namespace}, **FAST}
    store = create_store(list_reducer, ["seed"], conflux_enhancer(cfg))
    try:
        assert store.get_state() == ["seed"]
        store.dispatch({"type": "append", "item": 1}).result(WAIT)
        assert store.get_state() == ["seed", 1]
    finally:
        store.close()


# ---- dispatch --------------------------------------------------------------------------


def test_bad_actions_fail_at_once_and_nothing_is_sent(cluster: Cluster) -> None:
    store = cluster.followers()[0]
    before = len(store.node.get_log())
    with pytest.raises(TypeError):
        store.dispatch("append")
    with pytest.raises(TypeError):
        store.dispatch(None)
    with pytest.raises(ValueError, match="type"):
        store.dispatch({"item": 1})
    with pytest.raises(ValueError, match="type"):
        store.dispatch({"type": None})
    with pytest.raises(TypeError):
        store.dispatch({"type": "append", "item": {1, 2}})
    with pytest.raises(TypeError):
        store.dispatch({"type": "append", "item": object()})
    with pytest.raises(TypeError):
        store.dispatch({"type": "append", 3: "non-str key"})
    assert store.node.status()["pending"] == 0
    assert len(store.node.get_log()) == before
    assert all(s.get_state() == [] for s in cluster.stores)


def test_dispatch_resolves_once_committed_and_applied_here(cluster: Cluster) -> None:
    for store in cluster.stores:  # followers forward; the leader appends
        item = f"from-{store.node.id}"
        fut = store.dispatch({"type": "append", "item": item})
        assert isinstance(fut, Future)
        assert fut.result(WAIT) == {"type": "append", "item": item}
        assert item in store.get_state()  # applied here before the future resolved
    assert sorted(cluster.assert_replicas_equal()) == ["from-n0", "from-n1", "from-n2"]


def test_one_nodes_actions_commit_in_dispatch_order(cluster: Cluster) -> None:
    store = cluster.followers()[0]
    futures = [store.dispatch({"type": "append", "item": i}) for i in range(50)]
    for f in futures:
        f.result(WAIT)
    assert cluster.assert_replicas_equal() == list(range(50))


def test_actions_travel_as_json(cluster: Cluster) -> None:
    store = cluster.stores[0]
    store.dispatch({"type": "append", "item": (1, "two", None)}).result(WAIT)
    assert cluster.assert_replicas_equal() == [[1, "two", None]]


# ---- listeners -------------------------------------------------------------------------


def test_listeners_run_once_per_applied_action_on_every_node(cluster: Cluster) -> None:
    seen: dict[str, list[Any]] = {s.node.id: [] for s in cluster.stores}

    def recorder(store: ConfluxStore) -> Callable[[], None]:
        return lambda: seen[store.node.id].append(list(store.get_state()))

    for s in cluster.stores:
        s.subscribe(recorder(s))
    for i in range(5):
        cluster.stores[i % 3].dispatch({"type": "append", "item": i}).result(WAIT)
    cluster.assert_replicas_equal()
    wait_for(lambda: all(len(v) == 5 for v in seen.values()), what="5 calls per listener")
    first = seen["n0"]
    assert [len(state) for state in first] == [1, 2, 3, 4, 5]  # one call per action, in order
    assert all(v == first for v in seen.values())


def test_unsubscribe_works_and_is_idempotent(cluster: Cluster) -> None:
    store = cluster.stores[1]
    calls: list[str] = []
    listener = lambda: calls.append("a")  # noqa: E731
    unsub_a = store.subscribe(listener)
    unsub_b = store.subscribe(listener)  # the same function twice: two subscriptions
    store.dispatch({"type": "append", "item": 1}).result(WAIT)
    assert calls == ["a", "a"]
    unsub_a()
    unsub_a()  # harmless
    store.dispatch({"type": "append", "item": 2}).result(WAIT)
    assert calls == ["a", "a", "a"]
    unsub_b()
    store.dispatch({"type": "append", "item": 3}).result(WAIT)
    assert calls == ["a", "a", "a"]
    with pytest.raises(TypeError):
        store.subscribe("not callable")  # type: ignore[arg-type]


def test_a_raising_listener_harms_nothing(cluster: Cluster, caplog: Any) -> None:
    store = cluster.stores[0]
    calls: list[int] = []

    def bad() -> None:
        raise RuntimeError("listener bug")

    store.subscribe(bad)
    store.subscribe(lambda: calls.append(1))
    store.dispatch({"type": "append", "item": 1}).result(WAIT)
    store.dispatch({"type": "append", "item": 2}).result(WAIT)
    assert calls == [1, 1]
    assert "a listener raised" in caplog.text
    assert cluster.assert_replicas_equal() == [1, 2]


def test_listeners_may_dispatch(cluster: Cluster) -> None:
    store = cluster.stores[2]
    replies: list[Future[Any]] = []

    def reply() -> None:
        state = store.get_state()
        if state and state[-1] == "ping":
            replies.append(store.dispatch({"type": "append", "item": "pong"}))

    store.subscribe(reply)
    store.dispatch({"type": "append", "item": "ping"}).result(WAIT)
    wait_for(lambda: replies and replies[0].done(), what="the listener's dispatch")
    assert replies[0].result() == {"type": "append", "item": "pong"}
    assert cluster.assert_replicas_equal() == ["ping", "pong"]


# ---- committed and provisional state ----------------------------------------------------


def test_provisional_state_is_committed_state_plus_uncommitted_entries(namespace: str) -> None:
    # Long election timeouts: an isolated leader keeps leading for at least 1.5 s.
    calls: list[Any] = []

    def counting(state: Any, action: dict[str, Any]) -> Any:
        if action.get("item") == "p1":
            calls.append(action)
        return list_reducer(state, action)

    c = Cluster(namespace, election_timeout=(1.5, 2.0), heartbeat_interval=0.05)
    try:
        c.stores[0].dispatch({"type": "append", "item": "c1"}).result(WAIT)
        leader = c.leader()
        index = c.stores.index(leader)
        leader.close()  # replace the leader's store by one with a counting reducer
        c.stores[index] = c.make(leader.node.id, counting)
        leader = c.leader()
        c.assert_replicas_equal()
        hub = MemoryHub.get(namespace)
        hub.isolate(leader.node.id)
        pending = leader.dispatch({"type": "append", "item": "p1"}, timeout=0.5)
        wait_for(lambda: "p1" in leader.get_provisional_state(), what="p1 in the log")
        assert leader.get_state() == ["c1"]
        assert leader.get_provisional_state() == ["c1", "p1"]
        # A method does not run on a leader that cannot confirm it still leads.
        with pytest.raises(ProposalTimeout):
            leader.perform("append_unique", ["p1"], timeout=0.3).result(WAIT)
        # Kept incrementally: asking again reduces nothing again.
        reduced = len(calls)
        assert leader.get_provisional_state() == ["c1", "p1"]
        assert leader.get_provisional_state() == ["c1", "p1"]
        assert len(calls) == reduced
        with pytest.raises(ProposalTimeout):
            pending.result(WAIT)  # it could not commit in time (it may still, later)
        assert isinstance(pending.exception(), TimeoutError)
        hub.heal()
        final = c.assert_replicas_equal()
        assert final in (["c1"], ["c1", "p1"])  # p1 committed once, or was dropped
        c.stores[0].dispatch({"type": "append", "item": "c2"}).result(WAIT)
        assert c.assert_replicas_equal() == [*final, "c2"]
    finally:
        c.close()


def test_provisional_equals_committed_when_nothing_is_pending(cluster: Cluster) -> None:
    for s in cluster.stores:
        assert s.get_provisional_state() == s.get_state() == []
    cluster.stores[0].dispatch({"type": "append", "item": 1}).result(WAIT)
    cluster.assert_replicas_equal()
    assert all(s.get_provisional_state() == [1] for s in cluster.stores)


# ---- methods ---------------------------------------------------------------------------


def test_perform_returns_the_committed_action_from_every_node(cluster: Cluster) -> None:
    for s in cluster.stores:
        action = s.perform("append", [s.node.id]).result(WAIT)
        assert action == {"type": "append", "item": s.node.id}
        assert s.node.id in s.get_state()
    assert sorted(cluster.assert_replicas_equal()) == ["n0", "n1", "n2"]


def test_perform_none_resolves_none_and_appends_nothing(cluster: Cluster) -> None:
    for s in cluster.stores:
        assert s.perform("noop").result(WAIT) is None
    assert cluster.assert_replicas_equal() == []
    for s in cluster.stores:
        assert [e for e in s.node.get_log() if not e.internal] == []


def test_perform_errors_on_the_leader_arrive_as_they_are(cluster: Cluster) -> None:
    leader = cluster.leader()
    with pytest.raises(ValueError, match="returned"):
        leader.perform("return_error").result(WAIT)
    with pytest.raises(LookupError, match="raised"):
        leader.perform("raise").result(WAIT)
    with pytest.raises(Sold, match="sold out"):
        leader.perform("sold").result(WAIT)


def test_perform_errors_on_a_follower_keep_their_builtin_class(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    err = follower.perform("return_error").exception(WAIT)
    assert type(err) is ValueError and "returned" in str(err)
    err = follower.perform("raise").exception(WAIT)
    assert type(err) is LookupError and "raised" in str(err)
    err = follower.perform("sold").exception(WAIT)
    assert isinstance(err, RemoteError) and err.type_name == "Sold" and "sold out" in str(err)
    # a method that raises harms nothing else
    assert follower.perform("append", ["after"]).result(WAIT)["item"] == "after"
    assert cluster.assert_replicas_equal() == ["after"]


def test_perform_unknown_name_and_bad_arguments(cluster: Cluster) -> None:
    for s in cluster.stores:
        with pytest.raises(KeyError, match="nope"):
            s.perform("nope").result(WAIT)
    store = cluster.stores[0]
    with pytest.raises(TypeError):
        store.perform("append", [object()])
    with pytest.raises(TypeError):
        store.perform("append", "abc")
    with pytest.raises(TypeError):
        store.perform(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.perform("append", ["x"], timeout=-1)
    for s in cluster.stores:  # a method returning a non-action rejects with ValueError
        with pytest.raises(ValueError, match="type"):
            s.perform("bad_action").result(WAIT)
    assert cluster.assert_replicas_equal() == []


def test_perform_with_no_reachable_leader_times_out(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    hub = MemoryHub.get(cluster.namespace)
    hub.isolate(follower.node.id)
    try:
        fut = follower.perform("append", ["lost?"], timeout=0.3)
        with pytest.raises(ProposalTimeout):
            fut.result(WAIT)
        assert isinstance(fut.exception(), TimeoutError)
    finally:
        hub.heal()
    cluster.assert_replicas_equal()


def test_perform_actions_through_dispatch(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    fut = follower.dispatch(perform_action("append", "via-dispatch"))
    assert fut.result(WAIT) == {"type": "append", "item": "via-dispatch"}
    fut = follower.dispatch({"type": PERFORM, "name": "noop", "args": []})
    assert fut.result(WAIT) is None
    with pytest.raises(KeyError):
        follower.dispatch(perform_action("missing")).result(WAIT)
    assert cluster.assert_replicas_equal() == ["via-dispatch"]


# ---- a reducer that raises -------------------------------------------------------------


def test_a_raising_reducer_leaves_the_state_and_rejects_the_dispatcher(
    cluster: Cluster, caplog: Any
) -> None:
    heard: list[int] = []
    for s in cluster.stores:
        s.subscribe(lambda: heard.append(1))
    store = cluster.followers()[0]
    store.dispatch({"type": "append", "item": 1}).result(WAIT)
    with pytest.raises(ValueError, match="boom 7"):
        store.dispatch({"type": "boom", "n": 7}).result(WAIT)
    assert store.dispatch({"type": "append", "item": 2}).result(WAIT)  # not wedged
    with pytest.raises(ValueError, match="boom 1"):  # a method's action, too
        store.perform("boom").result(WAIT)
    assert cluster.assert_replicas_equal() == [1, 2]
    wait_for(lambda: len(heard) == 6, what="listeners of the two good actions")
    time.sleep(0.1)
    assert len(heard) == 6  # listeners do not run for an action that was not applied
    assert "the reducer raised" in caplog.text


# ---- close -----------------------------------------------------------------------------


def test_close_rejects_pending_futures_and_refuses_new_work(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    hub = MemoryHub.get(cluster.namespace)
    hub.isolate(follower.node.id)
    pending = follower.dispatch({"type": "append", "item": "never"})
    performing = follower.perform("append", ["never"])
    time.sleep(0.05)
    follower.close(5)
    for fut in (pending, performing):
        err = fut.exception(WAIT)
        assert isinstance(err, ClosedError)
        assert isinstance(err, RuntimeError) and isinstance(err, ConfluxError)
    with pytest.raises(ClosedError):
        follower.dispatch({"type": "append", "item": "late"})
    with pytest.raises(ClosedError):
        follower.perform("append", ["late"])
    with pytest.raises(TypeError):  # bad input is still reported as such
        follower.dispatch("bad")
    follower.close()  # twice is harmless
    follower.close(0)
    hub.heal()


def test_closing_the_leader_hands_over(cluster: Cluster) -> None:
    leader = cluster.leader()
    leader.close(5)
    survivor = cluster.open_stores[0]
    assert survivor.dispatch({"type": "append", "item": "after"}).result(WAIT)
    assert survivor.perform("append_unique", ["after2"]).result(WAIT)
    assert cluster.assert_replicas_equal() == ["after", "after2"]


def test_store_is_a_context_manager(namespace: str) -> None:
    cfg = {"id": "solo", "cluster_size": 1, "channel": {"name": "memory",
           "namespace": namespace}, **FAST}
    with create_store(list_reducer, enhancer=conflux_enhancer(cfg)) as store:
        store.dispatch({"type": "append", "item": 1}).result(WAIT)
    with pytest.raises(ClosedError):
        store.dispatch({"type": "append", "item": 2})


def test_replace_reducer_is_refused(cluster: Cluster) -> None:
    with pytest.raises(ConfluxError, match="replace_reducer"):
        cluster.stores[0].replace_reducer(counter_reducer)
    with pytest.raises(ConfluxError):
        cluster.stores[0]["replace_reducer"](counter_reducer)


def test_overload_rejects_with_overloaded(namespace: str) -> None:
    c = Cluster(namespace, max_pending=2)
    try:
        follower = c.followers()[0]
        hub = MemoryHub.get(namespace)
        hub.isolate(follower.node.id)
        futs = [follower.dispatch({"type": "append", "item": i}) for i in range(3)]
        assert isinstance(futs[2].exception(WAIT), Overloaded)
        hub.heal()
        assert [f.result(WAIT) for f in futs[:2]] == [
            {"type": "append", "item": 0}, {"type": "append", "item": 1}]
        assert c.assert_replicas_equal() == [0, 1]
    finally:
        c.close()


# ---- middleware ------------------------------------------------------------------------


def test_pydux_thunk_and_log_middleware_compose_with_the_enhancer(
    namespace: str, capsys: Any
) -> None:
    c = Cluster(namespace, enhance=lambda e: compose(
        apply_middleware(thunk_middleware, log_middleware), e))
    try:
        store = c.followers()[0]
        assert isinstance(store, ConfluxStore)

        def thunk(dispatch: Callable[[Any], Any], get_state: Callable[[], Any]) -> Any:
            return dispatch({"type": "append", "item": len(get_state())})

        assert store.dispatch(thunk).result(WAIT) == {"type": "append", "item": 0}
        assert store.dispatch(perform_action("append", "m")).result(WAIT)["item"] == "m"
        assert "Dispatch Action:" in capsys.readouterr().out
        assert store.perform("noop").result(WAIT) is None  # still a Conflux store
        assert c.assert_replicas_equal() == [0, "m"]
    finally:
        c.close()


def test_pydux_apply_middleware_works_too(namespace: str) -> None:
    from pydux import apply_middleware as pydux_apply_middleware

    c = Cluster(namespace, enhance=lambda e: compose(pydux_apply_middleware(thunk_middleware), e))
    try:
        store = c.stores[0]
        fut = store.dispatch(lambda dispatch, get_state: dispatch({"type": "append", "item": 1}))
        assert fut.result(WAIT) == {"type": "append", "item": 1}
        assert store.get_provisional_state() == [1]
        assert c.assert_replicas_equal() == [1]
    finally:
        c.close()


def test_a_validating_middleware_sees_the_provisional_state(namespace: str) -> None:
    seen_keys: list[set[str]] = []

    def no_duplicates(api: dict[str, Any]) -> Callable[[Any], Any]:
        seen_keys.append(set(api))

        def wrap(next_: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def dispatch(action: Any) -> Any:
                if action.get("type") == "append" and \
                        action["item"] in api["get_provisional_state"]():
                    raise ValueError(f"{action['item']!r} is already there")
                return next_(action)
            return dispatch
        return wrap

    c = Cluster(namespace, enhance=lambda e: compose(
        apply_middleware(thunk_middleware, no_duplicates, methods_middleware), e))
    try:
        leader = c.leader()
        first = leader.dispatch({"type": "append", "item": "x"})
        wait_for(lambda: "x" in leader.get_provisional_state(), what="x in the log")
        with pytest.raises(ValueError, match="already there"):
            leader.dispatch({"type": "append", "item": "x"})
        first.result(WAIT)
        c.assert_replicas_equal()
        for s in c.stores:  # committed now, so every node refuses it
            with pytest.raises(ValueError, match="already there"):
                s.dispatch({"type": "append", "item": "x"})
        # the API has the Conflux keys; the methods middleware performs through it
        assert {"get_state", "dispatch", "get_provisional_state", "perform"} <= seen_keys[0]
        assert c.stores[1].dispatch(perform_action("append", "y")).result(WAIT)["item"] == "y"
        assert c.assert_replicas_equal() == ["x", "y"]
    finally:
        c.close()


def test_middleware_inside_the_enhancer_sees_committed_actions(namespace: str) -> None:
    seen: list[Any] = []

    def recorder(api: dict[str, Any]) -> Callable[[Any], Any]:
        def wrap(next_: Callable[[Any], Any]) -> Callable[[Any], Any]:
            def dispatch(action: Any) -> Any:
                seen.append(action)
                return next_(action)
            return dispatch
        return wrap

    c = Cluster(namespace, n=1, enhance=lambda e: compose(e, apply_middleware(recorder)))
    try:
        c.stores[0].dispatch({"type": "append", "item": 1}).result(WAIT)
        assert seen == [{"type": "append", "item": 1}]
        assert c.assert_replicas_equal() == [1]
    finally:
        c.close()


# ---- lost updates ----------------------------------------------------------------------


def perform_incr(store: ConfluxStore) -> bool:
    try:
        store.perform("incr", timeout=WAIT).result(WAIT)
    except TimeoutError:  # e.g. the leader changed while the method ran: unknown outcome
        return False
    return True


def read_then_set(store: ConfluxStore) -> bool:
    """Read-modify-write outside perform: the committed state may be stale."""
    value = store.get_state()["count"]
    time.sleep(0.001)
    store.dispatch({"type": "set", "value": value + 1}).result(WAIT)
    return True


def test_no_lost_updates_through_perform(namespace: str) -> None:
    c = Cluster(namespace, reducer=counter_reducer)
    try:
        assert lost_updates(c, perform_incr) == 0
        # with every thread starting each increment at the same moment, too
        assert lost_updates(c, perform_incr, per_thread=4, barrier_rounds=True) == 0
    finally:
        c.close()


def test_the_detector_catches_read_modify_write_outside_perform(namespace: str) -> None:
    c = Cluster(namespace, reducer=counter_reducer)
    try:
        assert lost_updates(c, read_then_set, per_thread=4, barrier_rounds=True) > 0
    finally:
        c.close()


def test_no_lost_updates_across_a_leader_failover(namespace: str) -> None:
    c = Cluster(namespace, reducer=counter_reducer)
    try:
        leader = c.leader()
        done: list[int] = []
        stop = threading.Event()
        survivors = [s for s in c.stores if s is not leader]

        def run(store: ConfluxStore) -> None:
            while not stop.is_set():
                try:
                    store.perform("incr", timeout=2).result(WAIT)
                    done.append(1)
                except TimeoutError:
                    pass  # unknown outcome: may or may not have committed

        threads = [threading.Thread(target=run, args=(s,)) for s in survivors for _ in range(2)]
        for t in threads:
            t.start()
        wait_for(lambda: len(done) >= 10, what="some increments")
        leader.close(5)
        before = len(done)
        wait_for(lambda: len(done) >= before + 10, what="increments after the failover")
        stop.set()
        for t in threads:
            t.join(WAIT)
        count = c.assert_replicas_equal()["count"]
        assert count >= len(done)  # every acknowledged increment is there, none lost
    finally:
        c.close()


def test_a_reducer_that_dispatches_raises_and_nothing_multiplies(namespace: str) -> None:
    # pydux refuses it; a Conflux store did not, so every replica's reducer proposed a
    # copy and each node applied three.
    def reducer(state: Any, action: dict[str, Any]) -> Any:
        state = state if state is not None else []
        if action["type"] == "echo":
            for s in c.stores:
                s.dispatch({"type": "copy"})
        if action["type"] in ("echo", "copy"):
            return [*state, action["type"]]
        return state

    c = Cluster(namespace, reducer=reducer)
    try:
        leader = c.leader()
        with pytest.raises(ConfluxError, match="Reducers may not dispatch actions"):
            leader.dispatch({"type": "echo"}).result(10)
        leader.dispatch({"type": "after"}).result(10)
        assert c.assert_replicas_equal() == []  # the echo failed everywhere; no copies
    finally:
        c.close()


def test_nan_and_infinities_are_refused_at_dispatch(cluster: Cluster) -> None:
    # orjson writes them as null: every node reduced null while the future resolved with
    # nan.
    store = cluster.leader()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="null"):
            store.dispatch({"type": "append", "item": [1, {"x": bad}]})
        with pytest.raises(ValueError, match="null"):
            store.perform("append", [bad])
    assert store.dispatch({"type": "append", "item": None}).result(10)["item"] is None


def test_dispatch_takes_a_timeout(namespace: str) -> None:
    c = Cluster(namespace)
    try:
        store = c.leader()
        for other in c.stores:
            if other is not store:
                other.close()
        with pytest.raises(TimeoutError):  # no quorum: it cannot commit in time
            store.dispatch({"type": "append", "item": "late"}, timeout=0.2).result(10)
    finally:
        c.close()


def test_the_store_worker_forgets_the_timers_of_settled_futures() -> None:
    # A perform's timeout stayed in the worker's table, with its future, until it fired.
    from conflux_redux._worker import Worker

    worker = Worker("timers")
    fired: list[int] = []
    try:
        live: Future[Any] = Future()
        worker.at(time.monotonic() + 0.2, lambda: fired.append(1), live)
        for _ in range(10_000):
            settled: Future[Any] = Future()
            settled.set_result(None)
            worker.at(time.monotonic() + 3600, lambda: fired.append(2), settled)
        assert len(worker._timers) <= 2048  # swept: the live one and a bounded rest
        wait_for(lambda: fired == [1], what="the live timer to fire")
    finally:
        worker.close()


def test_the_store_can_be_awaited(cluster: Cluster) -> None:
    import asyncio

    async def go() -> tuple[Any, Any, Any]:
        store = cluster.stores[1]
        action = await store.adispatch({"type": "append", "item": "x"}, timeout=WAIT)
        performed = await store.aperform("append", ["y"], timeout=WAIT)
        return action, performed, await store.aread(timeout=WAIT)

    action, performed, state = asyncio.run(go())
    assert action == {"type": "append", "item": "x"}
    assert performed == {"type": "append", "item": "y"}
    assert state == ["x", "y"]
