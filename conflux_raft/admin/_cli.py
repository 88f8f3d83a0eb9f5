"""The `conflux` command: status, watch, log (and dashboard, in `_dashboard`)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from .._errors import ConfigError, Unreachable
from ._status import ClusterView, read_cluster, where

__all__ = ["main", "render"]

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen
_COLUMNS = (("id", "id"), ("role", "role"), ("term", "term"), ("leader", "leader"),
            ("commit", "commit_index"), ("applied", "applied_index"), ("last", "last_index"),
            ("snap", "snapshot_index"), ("lag", "lag"), ("heard", "last_heard"),
            ("redis", "connected"))
_LEFT = {"id", "role", "leader"}  # text columns; numbers align right


class _Failed(Exception):
    """A one-line error for stderr."""


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 1 after a one-line error on stderr."""
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (_Failed, ConfigError, Unreachable) as exc:
        print(f"conflux: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # how watch and dashboard end
        return 0 if args.command in ("watch", "dashboard") else 130
    return code


def _parser() -> argparse.ArgumentParser:
    env_url = os.environ.get("CONFLUX_URL")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=env_url, required=env_url is None,
                        help="the nodes' Redis (default: $CONFLUX_URL)")
    common.add_argument("--namespace", required=True, help="the cluster's namespace")
    reading = argparse.ArgumentParser(add_help=False, parents=[common])
    reading.add_argument("--timeout", type=_positive, default=2.0,
                         help="seconds to wait for Redis (default 2)")
    p = argparse.ArgumentParser(prog="conflux", description="See a Conflux cluster: the "
                                "status its nodes publish to Redis.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("status", parents=[reading], help="one row per node, then problems")
    s.add_argument("--json", action="store_true", help="a JSON list, one object per node")
    s.set_defaults(run=_status)
    w = sub.add_parser("watch", parents=[reading], help="status, refreshed until Ctrl-C")
    w.add_argument("--interval", type=_positive, default=1.0, help="seconds (default 1)")
    w.add_argument("--count", type=_count, default=None, help="stop after N refreshes")
    w.set_defaults(run=_watch)
    lg = sub.add_parser("log", parents=[reading], help="a node's last committed entries")
    lg.add_argument("--node", required=True, help="the node's id")
    lg.add_argument("-n", type=_count, default=20, help="entries (default 20, at most 20)")
    lg.set_defaults(run=_log)
    d = sub.add_parser("dashboard", parents=[common], help="a live page on 127.0.0.1")
    d.add_argument("--port", type=int, required=True)
    d.set_defaults(run=_dashboard)
    return p


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _read(args: argparse.Namespace) -> ClusterView:
    """The cluster's view; _Failed when no node reports."""
    view = read_cluster(args.url, args.namespace, args.timeout)
    if not view.nodes:
        raise _Failed(f"no node of namespace {args.namespace} reports to redis at "
                      f"{where(args.url)}")
    return view


def render(view: ClusterView) -> str:
    """The table of `conflux status`: a row per node, then a line per problem."""
    cells = [[_cell(key, row[key]) for _, key in _COLUMNS] for row in view.nodes]
    table = [[title for title, _ in _COLUMNS], *cells]
    widths = [max(len(line[i]) for line in table) for i in range(len(_COLUMNS))]
    left = [key in _LEFT for _, key in _COLUMNS]
    lines = ["  ".join(c.ljust(w) if lj else c.rjust(w)
                       for c, w, lj in zip(line, widths, left, strict=True)).rstrip()
             for line in table]
    return "\n".join([*lines, *(f"! {p}" for p in view.problems)])


def _cell(key: str, value: Any) -> str:
    if key == "last_heard":
        return f"{value:.1f}s"
    if key == "connected":
        return "ok" if value else "down"
    return "-" if value is None else str(value)


def _status(args: argparse.Namespace) -> int:
    view = _read(args)
    if args.json:
        print(orjson.dumps(view.nodes).decode())
    else:
        print(render(view))
    return 0


def _watch(args: argparse.Namespace) -> int:
    shown = 0
    while True:
        try:
            text, ok = render(_read(args)), True
        except (_Failed, Unreachable) as exc:  # nodes or Redis may come back: keep watching
            text, ok = f"conflux: {exc}", False
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"{CLEAR}conflux watch {args.namespace}  {stamp}  (Ctrl-C ends)"
                         f"\n\n{text}\n")
        sys.stdout.flush()
        shown += 1
        if args.count and shown >= args.count:
            return 0 if ok else 1
        time.sleep(args.interval)


def _log(args: argparse.Namespace) -> int:
    view = _read(args)
    row = next((r for r in view.nodes if r["id"] == args.node), None)
    if row is None:
        ids = ", ".join(r["id"] for r in view.nodes)
        raise _Failed(f"node {args.node} does not report in namespace {args.namespace} "
                      f"(reporting: {ids})")
    tail: Sequence[Any] = row["tail"][-args.n:]
    if not tail:
        print(f"{args.node} holds no committed entries")
        return 0
    width = max(len(str(tail[-1][0])), len("index"))
    print(f"{'index'.rjust(width)}  term  data")
    for index, term, data in tail:
        print(f"{str(index).rjust(width)}  {str(term).rjust(4)}  {orjson.dumps(data).decode()}")
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    from ._dashboard import serve  # the other half of the command, with its server

    serve(args.url, args.namespace, args.port)
    return 0
