"""`conflux dashboard`, checked in a real headless browser (Debian's Chromium, driven by
playwright) against real node processes over the real redis-server: what the page
SHOWS, not only what the server returns.

Without Chromium (`$CONFLUX_CHROMIUM`, else /usr/bin/chromium) or playwright the browser
tests skip with a reason; with `CONFLUX_REQUIRE_BROWSER=1` (CI sets it) they fail
instead. Playwright only drives that Chromium: never `playwright install`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from _wait import wait_for
from test_faults import Proc, agreed_leader

from conflux_raft.admin import ClusterView, Unreachable
from conflux_raft.admin._dashboard import Dashboard, make_server
from conflux_raft.testing._redis_server import free_port

CHROMIUM = os.environ.get("CONFLUX_CHROMIUM", "/usr/bin/chromium")  # Debian's package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set $CONFLUX_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium; skips (fails with CONFLUX_REQUIRE_BROWSER=1) without one."""
    missing = _browser_missing()
    if missing is not None:
        if os.environ.get("CONFLUX_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CONFLUX_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


class Served:
    """A Dashboard and its HTTP server on 127.0.0.1, both in background threads."""

    def __init__(self, url: str, namespace: str, interval: float = 0.5) -> None:
        self.dashboard = Dashboard(url, namespace, interval=interval)
        self.dashboard.start()
        self.server = make_server(self.dashboard, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def api(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "api/status", timeout=5) as r:
            out: dict[str, Any] = orjson.loads(r.read())
            return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.dashboard.close()


@pytest.fixture
def served() -> Iterator[Callable[[str, str], Served]]:
    started: list[Served] = []

    def start(url: str, namespace: str) -> Served:
        started.append(Served(url, namespace))
        return started[-1]

    yield start
    for s in started:
        s.close()


@pytest.fixture
def procs(redis_url: str, namespace: str) -> Iterator[list[Proc]]:
    ids = ["n1", "n2", "n3"]
    started = [Proc(i, ids, redis_url, namespace, "--lifetime", "90") for i in ids]
    try:
        for p in started:
            assert p.ready.wait(30), "node process did not start"
        yield started
    finally:
        for p in started:
            p.stop()


def _cards(page: Any) -> dict[str, dict[str, str]]:
    """What each node card shows: its classes, role, term and commit index, by id."""
    out: dict[str, dict[str, str]] = page.evaluate("""() => {
        const out = {};
        for (const c of document.querySelectorAll('.node-card')) {
          const q = s => (c.querySelector(s) || {}).textContent;
          out[c.dataset.id] = {cls: c.className, role: q('.role'), term: q('.term'),
                               commit: q('.commit-index'), applied: q('.applied-index')};
        }
        return out;
    }""")
    return out


def _timeline(page: Any) -> list[tuple[str, int]]:
    rows = page.eval_on_selector_all(
        "#leader-timeline li", "els => els.map(e => [e.dataset.leader, +e.dataset.term])")
    return [(str(a), int(b)) for a, b in rows]


def _num(text: str | None) -> int:
    return int(text) if text and text.isdigit() else -1


def test_the_page_shows_a_live_cluster_and_a_failover(
        browser: Any, procs: list[Proc], redis_url: str, namespace: str,
        served: Callable[[str, str], Served], tmp_path: Path) -> None:
    leader = agreed_leader(procs)
    s = served(redis_url, namespace)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    try:
        page.goto(s.url, timeout=15_000)

        # three cards, exactly one leader, and the terms the nodes themselves report
        wait_for(lambda: len(_cards(page)) == 3
                 and sum(c["role"] == "leader" for c in _cards(page).values()) == 1,
                 20, "three cards, one of them the leader")
        cards = _cards(page)
        assert sorted(cards) == ["n1", "n2", "n3"]
        assert cards[leader]["role"] == "leader"
        assert "role-leader" in cards[leader]["cls"]
        asked = [0.0]

        def terms() -> dict[str, int]:
            """The terms the nodes last said (asked again every 0.2 s)."""
            if time.monotonic() - asked[0] > 0.2:
                asked[0] = time.monotonic()
                for p in procs:
                    p.tell("status")
            with_status = [p for p in procs if p.statuses]
            return {p.id: p.statuses[-1]["term"] for p in with_status}

        wait_for(lambda: {i: _num(c["term"]) for i, c in _cards(page).items()} == terms(),
                 15, "the page to show the terms the nodes themselves report")
        term = terms()[leader]
        assert _timeline(page)[0] == (leader, term)

        # appending: the commit indexes shown grow, and the rate chart draws a line
        before = {i: _num(c["commit"]) for i, c in _cards(page).items()}
        for p in procs:
            p.tell("run")
        wait_for(lambda: all(_num(c["commit"]) > before[i] + 5
                             for i, c in _cards(page).items()), 20,
                 "the commit indexes shown to grow")
        wait_for(lambda: page.get_attribute("#rate-line", "d") not in (None, "")
                 and page.text_content("#rate-now") not in ("-", "0"), 15,
                 "the rate chart to draw a non-zero rate")
        assert page.get_attribute("#rate-line", "d").startswith("M")
        page.screenshot(path=str(tmp_path / "dashboard-live.png"), full_page=True)

        # kill -9 of the leader: a new leader in the timeline, the victim greyed or gone
        entries = len(_timeline(page))
        victim = next(p for p in procs if p.id == leader)
        victim.kill()
        new = agreed_leader([p for p in procs if p is not victim], exclude=leader)
        wait_for(lambda: len(_timeline(page)) > entries and _timeline(page)[0][0] == new,
                 20, f"the timeline to show {new} elected")
        assert _timeline(page)[0][1] > term

        def victim_greyed() -> bool:
            card = _cards(page).get(leader)
            return card is None or "stale" in card["cls"] or "absent" in card["cls"]

        wait_for(victim_greyed, 20, f"the killed {leader}'s card to grey out")
        opacity = page.eval_on_selector_all(
            f'.node-card[data-id="{leader}"]', "cs => cs.map(c => getComputedStyle(c).opacity)")
        assert all(float(o) < 1 for o in opacity)  # shown greyed out, if shown at all
        wait_for(lambda: any(f"{leader} is not reporting" in li for li in
                             page.eval_on_selector_all("#problems li",
                                                       "els => els.map(e => e.textContent)")),
                 20, "the problems list to name the silent node")
        page.screenshot(path=str(tmp_path / "dashboard-failover.png"), full_page=True)
        assert not page.is_visible("#error")
    finally:
        page.close()


def test_the_page_shows_redis_unreachable(
        browser: Any, namespace: str, served: Callable[[str, str], Served],
        tmp_path: Path) -> None:
    s = served(f"redis://127.0.0.1:{free_port()}/0", namespace)
    page = browser.new_page()
    try:
        page.goto(s.url, timeout=15_000)
        page.wait_for_selector("#error.shown", timeout=15_000)
        text = page.text_content("#error") or ""
        assert "Cannot read the cluster" in text and "no Redis at 127.0.0.1" in text
        assert page.query_selector_all(".node-card") == []
        assert page.get_attribute("#rate-line", "d") == ""
        page.screenshot(path=str(tmp_path / "dashboard-unreachable.png"))
    finally:
        page.close()
    body = s.api()
    assert body["nodes"] == [] and "no Redis at" in body["error"]


def test_history_records_each_leader_change_once_and_the_commit_rate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler's bookkeeping, with views built by hand (no Redis, no browser)."""
    clock = [1000.0]
    monkeypatch.setattr("conflux_raft.admin._dashboard.time.time", lambda: clock[0])
    views: list[ClusterView | Exception] = []

    def row(i: str, role: str, term: int, commit: int, heard: float = 0.0) -> dict[str, Any]:
        return {"id": i, "role": role, "term": term, "commit_index": commit,
                "last_heard": heard}

    def view(*rows: dict[str, Any]) -> ClusterView:
        return ClusterView("ns", list(rows), ["a", "b"], [], clock[0])

    def read(url: str, namespace: str) -> ClusterView:
        v = views.pop(0)
        if isinstance(v, Exception):
            raise v
        return v

    d = Dashboard("redis://x", "ns", read=read)
    steps: list[Callable[[], ClusterView | Exception]] = [  # built at their turn
        lambda: view(row("a", "leader", 2, 10), row("b", "follower", 2, 10)),
        lambda: view(row("a", "leader", 2, 30), row("b", "follower", 2, 25)),
        # a stale old leader and the new one: the higher term is the leader
        lambda: view(row("a", "leader", 2, 30), row("b", "leader", 3, 31)),
        lambda: Unreachable("no Redis at 127.0.0.1:1: refused"),
        lambda: view(row("b", "leader", 3, 40)),
        lambda: view(row("b", "leader", 3, 44)),
        # the publication seen 2 s ago, seen again: no new point (not a stall)
        lambda: view(row("b", "leader", 3, 44, heard=2.0)),
        lambda: view(row("b", "leader", 3, 44, heard=1.0)),
    ]
    shown = []
    for step in steps:
        views.append(step())
        d.sample()
        shown.append(d.as_json())
        clock[0] += 2.0
    assert [(c["leader"], c["term"]) for c in shown[-1]["history"]["leaders"]] == [
        ("a", 2), ("b", 3)]
    assert shown[0]["history"]["rate"] == []
    assert shown[1]["history"]["rate"] == [[1002.0, 10.0]]  # (30 - 10) / 2 s
    assert shown[3]["error"] == "no Redis at 127.0.0.1:1: refused"
    assert shown[3]["nodes"] == [] and shown[3]["absent"] == []
    assert shown[4]["error"] is None
    assert shown[4]["absent"] == ["a"]  # a member seen before, not reporting now
    # no rate across the outage; then (44 - 40) / 2 s; then a new publication (at 1013)
    assert [p[1] for p in shown[-2]["history"]["rate"]] == [10.0, 0.5, 2.0]
    assert shown[-1]["history"]["rate"][-1] == [1013.0, 0.0]


def test_the_command_serves_the_page_and_stops_on_ctrl_c(redis_url: str, namespace: str) -> None:
    """`conflux dashboard` as a user runs it: it prints its address, serves the page and
    the JSON on 127.0.0.1, and Ctrl-C (SIGINT) ends it with exit code 0."""
    port = free_port()
    with subprocess.Popen(
            [sys.executable, "-m", "conflux_raft.admin", "dashboard", "--url", redis_url,
             "--namespace", namespace, "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"http://127.0.0.1:{port}/" in line, line
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                page = r.read().decode()
            assert 'id="rate-chart"' in page and "<script>" in page
            # self-contained: nothing fetched from elsewhere (there may be no internet)
            assert not any(ref in page for ref in ("src=", "<link", "@import", "https://"))
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status",
                                        timeout=5) as r:
                body = orjson.loads(r.read())
            assert body["namespace"] == namespace and body["error"] is None
            assert body["nodes"] == [] and body["history"] == {"leaders": [], "rate": []}
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=5)
