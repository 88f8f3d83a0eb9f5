"""`conflux dashboard`: a page on 127.0.0.1 that shows a cluster live.

It is served by the standard library's `http.server` (a `ThreadingHTTPServer`), and the
page is one self-contained HTML document with its CSS, its JavaScript and an SVG chart
inline: no dependency to install, nothing to keep up to date, no CDN to reach (the
machines a cluster runs on often have no internet), and the page is small enough that a
framework would weigh more than it does.

A `Dashboard` samples the cluster with `read_cluster` about once a second in a thread
of its own and keeps a bounded history: the leader changes it saw (time, term, leader)
and the committed entries per second (the growth of the highest commit index between
two publications of it). `make_server` serves `GET /` (the page) and `GET /api/status`
(the last view as JSON, with `history`, the ids of nodes no longer reporting in
`absent`, and `error` while Redis is unreachable, in which case `nodes` is empty: the
page shows the error, never stale numbers). The page polls `/api/status` every second and builds its
elements with `textContent` only, so nothing a node publishes is ever read as HTML. A
node that has published nothing for 3 s (killed, say, its key not yet expired) is
greyed out as `stale`; a member with no key at all is greyed out as `absent`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from .._errors import ConfigError, ConfluxRaftError
from ._status import ClusterView, read_cluster

__all__ = ["PAGE", "Dashboard", "make_server", "serve"]

_log = logging.getLogger("conflux_raft.admin.dashboard")

RATE_SAMPLES = 120  # commits per second: a point per publication, about two minutes
LEADER_CHANGES = 50  # leader changes kept for the timeline (the latest ones)
MIN_RATE_SPAN = 0.5  # seconds between two publications that make a rate point


class Dashboard:
    """The dashboard's state: the last view of the cluster and a bounded history.

    `sample()` reads the cluster once; `start()` runs it every `interval` seconds in a
    daemon thread until `close()`. `as_json()` is what `/api/status` answers. `read` is
    `read_cluster` (waiting up to `timeout` seconds for Redis) unless a test passes
    another.
    """

    def __init__(self, url: str, namespace: str, interval: float = 1.0,
                 timeout: float = 2.0,
                 read: Callable[[str, str], ClusterView] | None = None) -> None:
        self.url = url
        self.namespace = namespace
        self.interval = interval
        self._read: Callable[[str, str], ClusterView] = read or (
            lambda u, ns: read_cluster(u, ns, timeout))
        self._lock = threading.Lock()
        self._view: ClusterView | None = None
        self._error: str | None = None
        self._sampled_at = 0.0
        self._seen: dict[str, None] = {}  # every node id seen reporting, in order
        self._leaders: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=LEADER_CHANGES)
        self._rate: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=RATE_SAMPLES)
        # (publication time, highest commit index) of the last rate point
        self._last_commit: tuple[float, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- sampling ------------------------------------------------------------------------

    def sample(self) -> None:
        """Read the cluster once and fold the view into the history. A `ConfigError` (a
        bad URL) propagates; any other failure is kept as the error the page shows."""
        try:
            view = self._read(self.url, self.namespace)
        except ConfigError:
            raise
        except ConfluxRaftError as exc:  # Unreachable, most likely
            self._failed(str(exc))
            return
        except Exception as exc:  # the sampler must outlive any surprise
            _log.debug("reading the cluster failed", exc_info=True)
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        now = time.time()
        with self._lock:
            self._view = view
            self._error = None
            self._sampled_at = now
            for row in view.nodes:
                self._seen.setdefault(str(row["id"]), None)
            self._note_leader(view, now)
            self._note_rate(view)

    def _failed(self, error: str) -> None:
        with self._lock:
            self._view = None
            self._error = error
            self._sampled_at = time.time()
            self._last_commit = None  # no rate across an outage

    def _note_leader(self, view: ClusterView, now: float) -> None:
        """Record a leader change: a (leader, term) other than the last one recorded. Two
        nodes claiming leadership (a problem `read_cluster` reports) count as the one with
        the higher term."""
        claims = [r for r in view.nodes if r.get("role") == "leader"]
        if not claims:
            return
        row = max(claims, key=lambda r: int(r.get("term") or 0))
        leader, term = str(row["id"]), int(row.get("term") or 0)
        last = self._leaders[-1] if self._leaders else None
        if last is None or (last["leader"], last["term"]) != (leader, term):
            self._leaders.append({"at": now, "term": term, "leader": leader})

    def _note_rate(self, view: ClusterView) -> None:
        """Committed entries per second: the growth of the highest commit index any node
        reports, over the time between the publications that carried it (a row's
        publication time is `view.at - last_heard`). Timing by publication, not by
        sample, keeps a sample that saw no new publication from reading as a stall; no
        point is added until a newer publication arrives. Never negative: the node that
        was ahead may be gone."""
        if not view.nodes:
            self._last_commit = None
            return
        row = max(view.nodes, key=lambda r: int(r.get("commit_index") or 0))
        top = int(row.get("commit_index") or 0)
        heard = row.get("last_heard")
        published = view.at - (heard if isinstance(heard, int | float) else 0.0)
        if self._last_commit is None:
            self._last_commit = (published, top)
            return
        then, before = self._last_commit
        if published - then < MIN_RATE_SPAN:  # the same publication, or nearly
            return
        self._rate.append((published, max(0, top - before) / (published - then)))
        self._last_commit = (published, top)

    def start(self) -> None:
        """Sample once now (a `ConfigError` raises here), then every `interval` seconds in
        a daemon thread."""
        self.sample()
        self._thread = threading.Thread(target=self._run, name="conflux-dashboard",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except ConfigError as exc:  # cannot happen after a good first sample
                self._failed(str(exc))

    def close(self) -> None:
        """Stop the sampler thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    # ---- what the page reads ---------------------------------------------------------------

    def as_json(self) -> dict[str, Any]:
        """The view (namespace, at, members, problems, nodes) with `absent` (members and
        nodes seen before that are not reporting now), `error` (None, or why the cluster
        could not be read: then `nodes` is empty), `history` (`leaders`: a list of
        {at, term, leader}; `rate`: [[time, committed per second], ...]) and `now`."""
        with self._lock:
            view, error = self._view, self._error
            if view is not None:
                out = view.as_json()
            else:
                out = {"namespace": self.namespace, "at": self._sampled_at or None,
                       "members": [], "problems": [], "nodes": []}
            reporting = {str(r["id"]) for r in out["nodes"]}
            known = dict.fromkeys([*map(str, out["members"]), *self._seen])
            out["absent"] = [] if error else [i for i in known if i not in reporting]
            out["error"] = error
            out["history"] = {"leaders": list(self._leaders),
                              "rate": [[t, round(v, 3)] for t, v in self._rate]}
            out["now"] = time.time()
        return out


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "conflux-dashboard"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", PAGE.encode())
        elif path == "/api/status":
            body = orjson.dumps(self.server.dashboard.as_json(), default=str)
            self._send(HTTPStatus.OK, "application/json", body)
        else:
            self._send(HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"not found\n")

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dashboard: Dashboard

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a browser tab closed mid-answer, mostly: not worth a traceback on the terminal
        _log.debug("request from %s failed", client_address, exc_info=True)


def make_server(dashboard: Dashboard, host: str = "127.0.0.1", port: int = 0) -> _Server:
    """An HTTP server for `dashboard` bound to host:port (port 0 picks a free one; read
    it from `server.server_port`). Call `serve_forever()` on it."""
    server = _Server((host, port), _Handler)
    server.dashboard = dashboard
    return server


def serve(url: str, namespace: str, port: int, host: str = "127.0.0.1",
          timeout: float = 2.0) -> None:
    """Serve the dashboard of `namespace` on http://host:port/ until Ctrl-C (port 0 picks
    a free one; the address is printed). A bad URL, or a port that cannot be listened
    on, raises `ConfigError` at once; Redis unreachable is shown on the page."""
    try:
        server = make_server(Dashboard(url, namespace, timeout=timeout), host, port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        server.dashboard.start()
        print(f"conflux dashboard of {namespace!r} on http://{host}:{server.server_port}/ "
              "(Ctrl-C to stop)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.dashboard.close()


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>conflux dashboard</title>
<style>
  :root { --fg: #1f2328; --muted: #656d76; --line: #d0d7de; --bg: #f6f8fa;
          --leader: #1a7f37; --follower: #0969da; --candidate: #bc4c00;
          --pre: #9a6700; --bad: #cf222e; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 14px 24px;
           background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { margin: 0; font-size: 18px; }
  header .ns { font-family: ui-monospace, monospace; }
  #updated { margin-left: auto; color: var(--muted); }
  main { padding: 16px 24px; }
  h2 { font-size: 14px; text-transform: uppercase; letter-spacing: .04em;
       color: var(--muted); margin: 20px 0 8px; }
  #error { display: none; padding: 12px 16px; border: 1px solid var(--bad);
           background: #ffebe9; color: var(--bad); border-radius: 6px; font-weight: 600; }
  #error.shown { display: block; }
  #nodes { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
           gap: 12px; }
  .node-card { background: #fff; border: 1px solid var(--line); border-radius: 8px;
               padding: 12px 14px; border-top: 4px solid var(--line); }
  .node-card.role-leader { border-top-color: var(--leader); }
  .node-card.role-follower { border-top-color: var(--follower); }
  .node-card.role-candidate { border-top-color: var(--candidate); }
  .node-card.role-pre-candidate { border-top-color: var(--pre); }
  .node-card.absent, .node-card.stale { opacity: .45; filter: grayscale(1);
                                        background: #eaeef2; }
  .node-card .top { display: flex; justify-content: space-between; align-items: center; }
  .node-card .id { font: 600 16px ui-monospace, monospace; }
  .node-card .top { gap: 8px; }
  .node-card .id { overflow-wrap: anywhere; }
  .role { padding: 1px 8px; border-radius: 10px; color: #fff; background: var(--muted);
          font-size: 12px; font-weight: 600; white-space: nowrap; }
  .role-leader .role { background: var(--leader); }
  .role-follower .role { background: var(--follower); }
  .role-candidate .role { background: var(--candidate); }
  .role-pre-candidate .role { background: var(--pre); }
  .node-card dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px;
                  margin: 10px 0 0; }
  .node-card dt { color: var(--muted); }
  .node-card dd { margin: 0; text-align: right; font-family: ui-monospace, monospace; }
  .redis.down { color: var(--bad); font-weight: 600; }
  #problems { margin: 0; padding-left: 20px; color: var(--bad); }
  #problems:empty::before { content: "none"; color: var(--muted); margin-left: -20px; }
  #nodes:empty::before { content: "no node is reporting"; color: var(--muted);
                         grid-column: 1 / -1; }
  #leader-timeline:empty::before { content: "none seen yet"; color: var(--muted); }
  .failing #nodes:empty::before { content: "not known while the cluster cannot be read"; }
  .failing #problems:empty::before { content: "not known"; }
  .row2 { display: grid; grid-template-columns: minmax(260px, 1fr) 2fr; gap: 24px; }
  @media (max-width: 760px) { .row2 { grid-template-columns: 1fr; gap: 0; } }
  .panel { background: #fff; border: 1px solid var(--line); border-radius: 8px;
           padding: 12px 14px; }
  #leader-timeline { list-style: none; margin: 0; padding: 0; max-height: 200px;
                     overflow-y: auto; }
  #leader-timeline li { display: flex; gap: 12px; padding: 3px 0;
                        border-bottom: 1px dashed var(--line); }
  #leader-timeline li:first-child { font-weight: 600; }
  #leader-timeline .when { color: var(--muted); font-family: ui-monospace, monospace; }
  #leader-timeline .who { font-family: ui-monospace, monospace; }
  .chart { position: relative; padding-left: 56px; margin-top: 8px; }
  .ylab { position: absolute; left: 0; width: 50px; text-align: right; font-size: 11px;
          color: var(--muted); top: 0; }
  .ylab.zero { top: auto; bottom: 20px; }
  .xlabs { display: flex; justify-content: space-between; font-size: 11px;
           color: var(--muted); }
  #rate-chart { width: 100%; height: 150px; display: block; }
  #rate-chart .grid { stroke: var(--line); stroke-width: 1;
                      vector-effect: non-scaling-stroke; }
  #rate-line { fill: none; stroke: var(--follower); stroke-width: 2;
               vector-effect: non-scaling-stroke; stroke-linejoin: round; }
  #rate-now { font: 600 20px ui-monospace, monospace; }
  .muted { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>conflux</h1><span class="ns" id="namespace"></span>
  <span id="updated">connecting...</span>
</header>
<main>
  <div id="error" role="alert"></div>
  <h2>Nodes</h2>
  <div id="nodes"></div>
  <h2>Problems</h2>
  <ul id="problems"></ul>
  <div class="row2">
    <div>
      <h2>Leader changes</h2>
      <div class="panel"><ol id="leader-timeline"></ol></div>
    </div>
    <div>
      <h2>Committed entries per second</h2>
      <div class="panel">
        <div><span id="rate-now">-</span> <span class="muted">/s now,
          peak <span id="rate-max">-</span>/s over the last two minutes</span></div>
        <div class="chart">
          <span class="ylab" id="rate-top"></span><span class="ylab zero">0</span>
          <svg id="rate-chart" viewBox="0 0 600 150" preserveAspectRatio="none"
               role="img" aria-label="committed entries per second, last two minutes">
            <line class="grid" x1="0" y1="5" x2="600" y2="5"></line>
            <line class="grid" x1="0" y1="75" x2="600" y2="75"></line>
            <line class="grid" x1="0" y1="145" x2="600" y2="145"></line>
            <path id="rate-line" d=""></path>
          </svg>
          <div class="xlabs"><span>2 min ago</span><span>now</span></div>
        </div>
      </div>
    </div>
  </div>
</main>
<script>
"use strict";
const WINDOW = 120;  // seconds shown by the chart
const STALE = 3;  // seconds without a publication (nodes publish about every second)
const FIELDS = [["term", "term"], ["commit", "commit_index"], ["applied", "applied_index"],
                ["lag", "lag"], ["last heard", "last_heard"], ["redis", "connected"]];

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function clock(t) { return new Date(t * 1000).toLocaleTimeString(); }
function show(v) { return v === null || v === undefined || v === "" ? "-" : String(v); }
function heard(v) {
  if (typeof v !== "number") return show(v);
  return v.toFixed(1) + " s ago";
}

function card(row, absent) {
  const role = absent ? "not reporting" : show(row.role);
  const c = el("div", {"class": "node-card role-" + role.replace(/ /g, "-"),
                       "data-id": row.id});
  if (absent) c.classList.add("absent");
  // silent for a few publications: killed or cut off, and its key not yet expired
  if (!absent && typeof row.last_heard === "number" && row.last_heard > STALE) {
    c.classList.add("stale");
    c.title = "no status published for " + row.last_heard.toFixed(1) + " s";
  }
  const top = el("div", {"class": "top"});
  top.append(el("span", {"class": "id"}, row.id), el("span", {"class": "role"}, role));
  c.append(top);
  const dl = el("dl");
  for (const [label, key] of FIELDS) {
    let v = absent ? "-" : row[key], cls = key.replace(/_/g, "-");
    if (key === "connected") {
      cls = "redis";
      v = absent ? "-" : (v === false ? "down" : "ok");
    } else if (key === "last_heard") {
      cls = "last-heard";
      v = absent ? "-" : heard(v);
    } else if (key === "term") {
      cls = "term";
    }
    const dd = el("dd", {"class": cls}, show(v));
    if (cls === "redis" && v === "down") dd.classList.add("down");
    dl.append(el("dt", {}, label), dd);
  }
  c.append(dl);
  return c;
}

function chart(points, now) {
  const line = document.getElementById("rate-line");
  const recent = points.filter(p => p[0] >= now - WINDOW);
  const peak = Math.max(1, ...recent.map(p => p[1]));
  document.getElementById("rate-top").textContent = Math.round(peak) + "/s";
  document.getElementById("rate-max").textContent =
    recent.length ? Math.round(Math.max(...recent.map(p => p[1]))) : "-";
  document.getElementById("rate-now").textContent =
    recent.length ? Math.round(recent[recent.length - 1][1]) : "-";
  if (recent.length < 2) { line.setAttribute("d", ""); return; }
  const d = recent.map((p, i) => {
    const x = (600 * (p[0] - (now - WINDOW)) / WINDOW).toFixed(1);
    const y = (145 - 140 * p[1] / peak).toFixed(1);
    return (i ? "L" : "M") + x + " " + y;
  });
  line.setAttribute("d", d.join(" "));
}

function render(s) {
  document.getElementById("namespace").textContent = s.namespace;
  const err = document.getElementById("error");
  err.textContent = s.error ? "Cannot read the cluster: " + s.error : "";
  err.classList.toggle("shown", !!s.error);
  document.body.classList.toggle("failing", !!s.error);
  document.getElementById("updated").textContent =
    s.at ? (s.error ? "last tried " : "updated ") + clock(s.at) : "waiting for a first sample";
  const nodes = document.getElementById("nodes");
  const cards = s.nodes.map(r => card(r, false))
    .concat(s.absent.map(id => card({id: id}, true)));
  cards.sort((a, b) => a.dataset.id < b.dataset.id ? -1 : a.dataset.id > b.dataset.id ? 1 : 0);
  nodes.replaceChildren(...cards);
  document.getElementById("problems").replaceChildren(
    ...s.problems.map(p => el("li", {}, p)));
  document.getElementById("leader-timeline").replaceChildren(
    ...s.history.leaders.slice().reverse().map(c => {
      const li = el("li", {"data-leader": c.leader, "data-term": String(c.term)});
      li.append(el("span", {"class": "when"}, clock(c.at)),
                el("span", {"class": "who"}, c.leader),
                el("span", {"class": "term"}, "term " + c.term));
      return li;
    }));
  chart(s.error ? [] : s.history.rate, s.now);
}

async function poll() {
  try {
    const r = await fetch("/api/status", {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
  } catch (e) {
    const err = document.getElementById("error");
    err.textContent = "The dashboard server does not answer (" + e.message + ")";
    err.classList.add("shown");
    document.body.classList.add("failing");
    document.getElementById("nodes").replaceChildren();
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body>
</html>
"""
