"""The loop thread: the only thread that touches the core.

Each turn applies the ticks that real time has brought, takes what the inbox holds
(messages, proposals, reads, rpc calls) and feeds it to the core, then processes every
`Ready`: persist the hard state and entries, hand committed entries to the apply
thread, send the messages, then advance (etcd's order, but for apply before send: the
entries are durable by then, and the caller's future need not wait for a send). The
core's lock is held for the whole turn, so readers (`status`, `get_log`) and rpc
functions see a consistent core.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any

from .._errors import ClosedError, ConfigError, MalformedMessage, Overloaded, ProposalTimeout
from ..core import (
    CoreConfig,
    Message,
    MsgType,
    RaftCore,
    ReadState,
    Ready,
    Role,
    Snapshot,
    owner_of,
)
from ..storage import Storage
from ..transport import Discovery, Transport, decode, encode, encode_all
from ._apply import ENTRY, Applier, LogEntry
from ._commands import (
    Appended,
    CallRpc,
    Command,
    Committed,
    LeaderChanged,
    Propose,
    Read,
    Receive,
    Restored,
    RunRpc,
    Snapshotted,
    settle,
    to_json,
)
from ._options import NodeOptions
from ._rpc import Append, OutCall, Parked, error_payload, rebuild, run_rpc

log = logging.getLogger("conflux_raft")

TICKS_PER_HEARTBEAT = 2
_MAX_TAKE = 4096  # inbox items handled per turn
_MAX_SLEEP_TICKS = 1 << 16  # a core with nothing due still wakes now and then
_MIN_DEADLINES = 1024  # deadlines kept before the settled ones are swept out
_SERVED, _SERVED_FOR = 10_000, 60.0  # the leader's rpc answers kept for retries: count, s
_FORGOTTEN_FOR = 3600.0  # s: how long a caller's highest forgotten call is remembered


class Loop:
    """The core and everything the loop thread owns: proposals' and rpcs' futures, their
    deadlines, the transport's inbox. `lock` is held while the core is in use."""

    def __init__(self, options: NodeOptions, session: str, transport: Transport,
                 discovery: Discovery | None, storage: Storage,
                 rpc: Mapping[str, Callable[..., Any]], voters: tuple[str, ...] | None,
                 snapshot: Callable[[], bytes] | None = None,
                 restore: Callable[[bytes], Any] | None = None) -> None:
        self.options = options
        self.id = options.id
        self.session = session
        self.transport = transport
        self.discovery = discovery
        self.storage = storage
        self.rpc = rpc
        self.voters = voters
        self.lock = threading.RLock()
        self.applier = Applier(options.id, restore, snapshot, options.snapshot_every,
                               self._take_snapshot)
        self.core: RaftCore | None = None
        self.closed = threading.Event()
        self.counters = {"malformed": 0, "unknown_sender": 0}
        self._inbox: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._futures: dict[int, Future[int]] = {}  # own proposal seq -> future (loop only)
        # Proposals admitted by callers (under the admit lock) and taken by the loop: their
        # difference is what waits in the inbox; the loop thread never takes that lock.
        self._admit_lock = threading.Lock()
        self._admitted = 0
        self._taken = 0
        # (deadline, tie-breaker, future, why, proposal seq, rpc id or read to forget)
        self._deadlines: list[tuple[float, int, Future[Any], str, int | str]] = []
        self._deadline_ids = itertools.count()
        self._deadline_limit = _MIN_DEADLINES
        self._rpc_ids = itertools.count(1)
        self._rpc_out: dict[str, OutCall] = {}
        self._served: OrderedDict[str, tuple[float, Any]] = OrderedDict()  # rid -> answer
        # caller session -> (highest call number whose answer was dropped, when)
        self._forgotten: dict[str, tuple[int, float]] = {}
        self._parked: dict[str, Parked] = {}  # leader: rpcs waiting for their read index
        self._read_ids = itertools.count(1)
        self._reads_out: dict[str, Future[int]] = {}  # read context -> future (not yet indexed)
        self._reads_asked = 0.0  # when unanswered reads were last asked again
        self._warned: set[str] = set()
        self._superseded: ConfigError | None = None  # set once the leader refuses ours
        self._leader_seen: str | None = None
        self._term_seen = 0  # the term last logged: a failed election is logged too
        self._no_leader_since: float | None = time.monotonic()

    # ---- from other threads --------------------------------------------------------------

    def submit(self, command: Command) -> None:
        """Queue a command for the loop thread."""
        if isinstance(command, Propose):
            if self._superseded is not None:
                settle(command.future, exc=self._superseded)
                return
            with self._admit_lock:
                # What the core still holds: a proposal that timed out stays queued (it may
                # still commit), so it counts until it does.
                core = self.core
                queued = len(core.proposals) if core is not None else 0
                held = queued + self._admitted - self._taken
                if held >= self.options.max_pending:
                    settle(command.future, exc=Overloaded(
                        f"{self.options.max_pending} proposals of this node are in flight "
                        "(max_pending)"))
                    return
                self._admitted += 1
        self._inbox.put(command)

    def deliver(self, raw: bytes) -> None:
        """The transport's callback: decode, then queue; garbage is counted and dropped."""
        try:
            msg = decode(raw, self.options.secret)
        except MalformedMessage as exc:
            self.counters["malformed"] += 1
            n = self.counters["malformed"]
            if n & (n - 1) == 0:  # 1, 2, 4, 8, ...: logged once in a while
                log.warning("%s dropped a malformed message (%d so far): %s", self.id, n, exc)
            return
        self._inbox.put(Receive(msg))

    def pending(self) -> int:
        return len(self._futures)

    def stop(self) -> None:
        """Ask the loop to end (close sets `closed` first)."""
        self._inbox.put(None)

    def reject_all(self, err: ClosedError) -> None:
        """Close: fail every future this node still holds. Called once the loop ended."""
        with self.lock:
            futures = list(self._futures.values())
            self._futures.clear()
            for fut in futures:
                settle(fut, exc=err)
            for call in self._rpc_out.values():
                settle(call.future, exc=err)
            self._rpc_out.clear()
            for read in self._reads_out.values():
                settle(read, exc=err)
            self._reads_out.clear()
            self.applier.reject_all(err)

    def reject_queued(self, err: ClosedError) -> None:
        """Close: fail what was queued after the loop stopped."""
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Propose | CallRpc | Read):
                settle(item.future, exc=err)

    # ---- the thread -------------------------------------------------------------------

    def run(self) -> None:
        """The loop thread's body; if it raises, RaftNode closes the node."""
        if self.voters is not None and self.discovery is not None:
            self._restore_voters(self.voters)
        while self.voters is None:
            if self.closed.is_set():
                return
            assert self.discovery is not None and self.options.cluster_size is not None
            try:
                self.voters = tuple(self.discovery.join(self.options.cluster_size, 0.2))
            except TimeoutError:
                continue
            except ClosedError:
                return
        if self.storage.load_voters() is None:
            self.storage.save_voters(self.voters)  # durable before it votes or counts
        with self.lock:
            self.core = core = self._make_core(self.voters)
            if core.snapshot is not None:  # the application starts from it
                self.applier.put(Restored(core.snapshot))
        tick = self.options.heartbeat_interval / TICKS_PER_HEARTBEAT
        max_burst = core.cfg.election_ticks[1] + 1  # enough for any timeout to fire once
        ticked = time.monotonic()  # ticks are applied up to this time
        inbox = self._inbox
        while not self.closed.is_set():
            # Sleep until a tick can matter (or a deadline is due), unless work arrives.
            wake = ticked + tick * min(core.ticks_until_due(), _MAX_SLEEP_TICKS)
            if self._deadlines:
                wake = min(wake, self._deadlines[0][0])
            items: list[Command | None] = []
            try:
                items.append(inbox.get(timeout=max(wake - time.monotonic(), 0)))
                while len(items) < _MAX_TAKE:
                    items.append(inbox.get_nowait())
            except queue.Empty:
                pass
            with self.lock:
                if self.closed.is_set():
                    for item in items:  # leave what was taken for close() to reject
                        if item is not None:
                            inbox.put(item)
                    return
                # Real time first: the ticks that passed while this thread waited (or was
                # paused) come before the messages that arrived meanwhile.
                now = time.monotonic()
                due = int((now - ticked) / tick)
                if due:
                    for _ in range(min(due, max_burst)):
                        core.tick()
                    ticked += due * tick
                if self._deadlines and self._deadlines[0][0] <= now:
                    self._expire(now)
                if due and self._rpc_out:
                    self._resend_rpcs(core, now)
                if due and (self._reads_out or self._parked):
                    self._ask_again(core, now)
                for item in items:
                    if item is not None:
                        self._handle(core, item)
                while core.has_ready():
                    self._process(core, core.ready())
                if self._after_ready(core):
                    while core.has_ready():
                        self._process(core, core.ready())
                if core.superseded_by and self._superseded is None:
                    self._refuse_proposals(core)

    def _restore_voters(self, voters: tuple[str, ...]) -> None:
        """Durable voters go back into a namespace whose list was lost; a list that says
        otherwise is logged, and this node keeps its own."""
        assert self.discovery is not None
        try:
            listed = self.discovery.restore(voters, 1.0)
        except (TimeoutError, ClosedError, ConfigError) as exc:
            log.info("%s: could not check the namespace's voter list (%s)", self.id, exc)
            return
        if tuple(listed[: len(voters)]) != voters:
            log.warning("%s keeps the voters its storage holds %s: the namespace's list says "
                        "%s (did Redis lose its data and a stranger register?)", self.id,
                        list(voters), listed)

    def _make_core(self, voters: tuple[str, ...]) -> RaftCore:
        o = self.options
        tick = o.heartbeat_interval / TICKS_PER_HEARTBEAT
        lo, hi = (max(round(t / tick), TICKS_PER_HEARTBEAT + 1) for t in o.election_timeout)
        hard_state, entries = self.storage.load()
        snapshot = self.storage.snapshot()
        # A new session supersedes this node's older ones (the leader then refuses them),
        # so it must be numbered above every one this node's storage knows.
        known = [s for s, _ in snapshot.sessions] if snapshot else []
        known += [e.client for e in entries if e.client]
        mine = [w[1] for s in known if (w := owner_of(s)) is not None and w[0] == self.id]
        incarnation = owner_of(self.session)
        if mine and incarnation is not None and incarnation[1] <= max(mine):
            self.session = f"{self.id}.{max(mine) + 1}"
        return RaftCore(
            CoreConfig(o.id, voters, self.session, election_ticks=(lo, hi),
                       heartbeat_ticks=TICKS_PER_HEARTBEAT),
            random.Random(),
            hard_state,
            entries,
            snapshot,
        )

    def _handle(self, core: RaftCore, item: Command) -> None:
        if isinstance(item, Receive):
            self._on_message(core, item.message)
        elif isinstance(item, Propose):
            if not item.future.done():
                seq = core.propose(item.data)
                self._futures[seq] = item.future
                self._at(item.deadline, item.future, seq, "not committed in time")
            # Counted as taken only once the core holds it: callers that look in between
            # count it twice, never not at all, so max_pending is never exceeded.
            self._taken += 1
        elif isinstance(item, Read):
            context = f"{self.session}/{next(self._read_ids)}"
            self._reads_out[context] = item.future
            self._at(item.deadline, item.future, context, "the read was not confirmed in time")
            core.read_index(context)
        elif isinstance(item, RunRpc):
            self._run_parked(core, item.rid)
        elif isinstance(item, Snapshotted):
            # Durable: drop the log up to it, but for a window kept for slow followers.
            core.compact(item.snapshot, self.options.snapshot_every // 10)
            self.storage.compact(core.log.offset)
        else:
            rid = f"{self.session}:{next(self._rpc_ids)}"
            self._rpc_out[rid] = OutCall(item.future, item.name, item.args)
            self._at(item.deadline, item.future, rid, "the rpc was not answered in time")
            self._send_rpc(core, rid)

    def _on_message(self, core: RaftCore, m: Message) -> None:
        if m.dst != self.id:
            return
        assert self.voters is not None
        if m.src not in self.voters:
            self.counters["unknown_sender"] += 1
            if m.src not in self._warned:
                self._warned.add(m.src)
                log.warning(
                    "%s ignores messages from %r, which is not a voter of this cluster %s: "
                    "is another node using the same namespace?", self.id, m.src,
                    list(self.voters))
            return
        if m.type is MsgType.RPC:
            self._serve_rpc(core, m)
        elif m.type is MsgType.RPC_RESP:
            self._on_rpc_resp(core, m)
        else:
            core.step(m)

    def _process(self, core: RaftCore, rd: Ready) -> None:
        # Persist first: nothing may be sent or applied before it is durable. Then hand
        # committed entries to the apply thread (they are durable here, and applying
        # them never waits for a send), then send, then advance.
        if rd.snapshot is not None:  # from the leader: durable first, then restored
            self.storage.save_snapshot(rd.snapshot)
            top = dict(rd.snapshot.sessions).get(self.session, 0)
            held = tuple(self._futures.pop(s) for s in [s for s in self._futures if s <= top])
            self.applier.put(Restored(rd.snapshot, held))
        if rd.hard_state is not None or rd.entries:
            self.storage.save(rd.hard_state, rd.entries)
        if rd.entries and self.applier.wants_appended():
            self.applier.put(Appended(rd.entries))
        if rd.committed:
            futures, session = self._futures, self.session
            done = tuple((e, fut) for e in rd.committed
                         if e.client == session and (fut := futures.pop(e.seq, None)))
            self.applier.put(Committed(rd.committed, done))
        if rd.messages:
            self.transport.send(encode_all(rd.messages, self.options.secret))
        if rd.reads:
            self._on_reads(core, rd.reads)
        core.advance(rd)

    def _after_ready(self, core: RaftCore) -> bool:
        """React to a change of leader; whether the core was given more work."""
        leader = core.leader
        if leader == self._leader_seen and core.term == self._term_seen:
            return False
        self._term_seen = core.term  # a new term alone (a failed election) is logged too
        log.info("%s: %s (term %d)", self.id,
                 "no leader known" if leader is None else f"the leader is {leader}", core.term)
        if leader == self._leader_seen:
            return False
        self._leader_seen = leader
        # a leader merely unknown for a while (a pre-vote, say) fails no call: calls wait
        self._no_leader_since = time.monotonic() if leader is None else None
        if leader != self.id:  # rpcs waiting here for a read index did not run
            for rid, parked in list(self._parked.items()):
                self._unpark(core, rid, parked)
        if leader is not None:
            self.applier.put(LeaderChanged(leader, core.term))
            for rid, call in list(self._rpc_out.items()):
                if call.sent_to is None:
                    self._send_rpc(core, rid)
                elif call.sent_to != leader:  # sent to another leader: the outcome is unknown
                    del self._rpc_out[rid]
                    settle(call.future, exc=ProposalTimeout(
                        "the leader changed before the rpc was answered; it may have run"))
            for context in self._reads_out:  # ask the new leader at once
                core.read_index(context)
        return True

    def _refuse_proposals(self, core: RaftCore) -> None:
        """The leader holds a newer session of this node's id and refuses this one's
        proposals: say so, fail them, and fail every later one at once."""
        self._superseded = err = ConfigError(
            f"the leader refuses this node's proposals: its session {self.session} is "
            f"superseded by incarnation {core.superseded_by} of id {self.id!r} (another "
            "process with this id, or a clock that went back since its last start); "
            "restart it (with a unique id)")
        log.error("%s", err)
        futures = list(self._futures.values())
        self._futures.clear()
        for fut in futures:
            settle(fut, exc=err)

    def _at(self, deadline: float | None, fut: Future[Any], key: int | str, why: str) -> None:
        if deadline is None:
            return
        heapq.heappush(self._deadlines, (deadline, next(self._deadline_ids), fut, why, key))
        if len(self._deadlines) > self._deadline_limit:  # forget the settled, amortized
            self._deadlines = [d for d in self._deadlines if not d[2].done()]
            heapq.heapify(self._deadlines)
            self._deadline_limit = max(_MIN_DEADLINES, 2 * len(self._deadlines))

    def _expire(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, _, fut, why, key = heapq.heappop(self._deadlines)
            outcome = ""
            if isinstance(key, int):
                if self._futures.get(key) is fut:
                    del self._futures[key]
                outcome = "; it may still commit later"
            elif key in self._reads_out:
                if self._reads_out[key] is fut:
                    del self._reads_out[key]
            else:
                if key in self._rpc_out and self._rpc_out[key].future is fut:
                    del self._rpc_out[key]
                outcome = "; it may have run"
            if not fut.done():
                settle(fut, exc=ProposalTimeout(f"{why} ({self._why_late(now)}){outcome}"))

    def _why_late(self, now: float) -> str:
        """What stands in the way, for timeout messages."""
        reasons = []
        if self._no_leader_since is not None:
            reasons.append(f"no leader known for {now - self._no_leader_since:.1f} s")
        trouble = self.transport.health()
        if trouble:
            reasons.append(trouble)
        return "; ".join(reasons) or "a leader is known, but no quorum answered in time"

    # ---- rpc ------------------------------------------------------------------------

    def _send_rpc(self, core: RaftCore, rid: str) -> None:
        call = self._rpc_out[rid]
        leader = core.leader
        if leader is None:
            return  # waits for a leader
        call.sent_to, call.sent_at = leader, time.monotonic()
        if leader == self.id:
            self._park(core, rid, Parked(call.name, call.args, self.id))
            return
        msg = Message(MsgType.RPC, self.id, leader, context=rid, payload=[call.name, call.args])
        self.transport.send([(leader, encode(msg, self.options.secret))])

    def _resend_rpcs(self, core: RaftCore, now: float) -> None:
        """A call (or its answer) may have been lost: send it again to the same leader,
        which answers from its cache rather than run it twice. (A call parked here, on
        the leader, is asked again by `_ask_again`.) A call sent back by the leader this
        node still sees goes to it again too, rather than wait for a change of leader
        that may never come."""
        late = now - self.options.election_timeout[0]
        leader = core.leader
        for rid, call in list(self._rpc_out.items()):
            # Sent to this leader, or sent back by it ("redirect": it did not run it) while
            # this node still sees it lead: ask it again.
            if (call.sent_at < late and leader is not None
                    and (call.sent_to is None or call.sent_to == leader != self.id)):
                self._send_rpc(core, rid)

    def _run_rpc(self, name: str, args: list[Any]) -> tuple[bool, Any]:
        """run_rpc, timed: a slow one holds up heartbeats and can cost the leadership."""
        start = time.monotonic()
        result = run_rpc(self.rpc, name, args)
        took = time.monotonic() - start
        budget = self.options.election_timeout[0]
        if took > budget / 4:
            label = f"{name}({args[0]!r}, ...)" if args and isinstance(args[0], str) else name
            log.warning("%s: rpc %s took %.3f s on the leader's loop thread (the election "
                        "timeout is %.3f s): it delays heartbeats, and a slower one can cost "
                        "this node its leadership", self.id, label, took, budget)
        return result

    def _serve_rpc(self, core: RaftCore, m: Message) -> None:
        cached = self._served.get(m.context)
        if cached is not None:  # a retry: the answer again (leader or not), never a rerun
            self._answer(m.src, m.context, cached[1])
        elif self._was_forgotten(m.context):  # it may have run: never run it (again)
            self._answer(m.src, m.context, {"forgotten": True})
        elif core.role is not Role.LEADER:
            self._answer(m.src, m.context, {"redirect": core.leader})
        elif m.context in self._parked:
            return  # a retry of a call that waits for its read index: answered when it runs
        elif not (isinstance(m.payload, list) and len(m.payload) == 2
                  and isinstance(m.payload[0], str) and isinstance(m.payload[1], list)):
            self._answer(m.src, m.context, {"err": ["ValueError", "malformed rpc"]})
        else:
            self._park(core, m.context, Parked(m.payload[0], m.payload[1], m.src))

    def _park(self, core: RaftCore, rid: str, parked: Parked) -> None:
        """The leader: the rpc runs once a quorum confirms this leadership and the read
        index is applied (`_on_reads`, then `_run_parked`)."""
        self._parked[rid] = parked
        core.read_index(rid)

    def _unpark(self, core: RaftCore, rid: str, parked: Parked) -> None:
        """No longer the leader: the rpc did not run, and goes to the leader there is."""
        del self._parked[rid]
        if parked.asker != self.id:
            self._answer(parked.asker, rid, {"redirect": core.leader})
        elif rid in self._rpc_out:
            self._rpc_out[rid].sent_to = None
            if core.leader is not None and core.leader != self.id:
                self._send_rpc(core, rid)

    def _run_parked(self, core: RaftCore, rid: str) -> None:
        parked = self._parked.get(rid)
        if parked is None:
            return
        if core.role is not Role.LEADER:
            self._unpark(core, rid, parked)
            return
        del self._parked[rid]
        local = parked.asker == self.id
        call = self._rpc_out.pop(rid, None) if local else None
        if local and call is None:
            return  # the caller's deadline passed: it was told the call may have run
        ok, value = self._run_rpc(parked.name, parked.args)
        # The answer waits for the log as it stands now to commit: for an Append, its own
        # entry; for a value, the entries it may have read that are not committed yet.
        appended = ok and isinstance(value, Append)
        if appended:
            entry = core.append_now(to_json(value.data))
            at = [entry.index, entry.term]
        else:
            last = core.log.last_index
            at = [last, core.log.term_at(last) or 0]
        if call is not None:
            if not ok:
                settle(call.future, exc=value)  # here: the exception itself
            else:  # an Append resolves with its LogEntry
                self.applier.wait_applied(at[0], at[1], call.future, core.log,
                                          ENTRY if appended else value)
            return
        payload: Any
        if not ok:
            payload = {"err": error_payload(value)}
        elif appended:
            payload = {"appended": at}
        else:
            payload = {"ok": value, "at": at}
        self._remember(rid, payload)
        self._answer(parked.asker, rid, payload)

    def _answer(self, to: str, rid: str, payload: Any) -> None:
        resp = Message(MsgType.RPC_RESP, self.id, to, context=rid, payload=payload)
        self.transport.send([(to, encode(resp, self.options.secret))])

    def _remember(self, rid: str, payload: Any) -> None:
        """Keep an answer for retries: at most _SERVED answers, none older than _SERVED_FOR.
        For each caller, the highest call whose answer is dropped is kept (an hour), and
        calls up to it are never run: a retry that comes later is told it may have run."""
        now = time.monotonic()
        served, forgotten = self._served, self._forgotten
        served[rid] = (now, payload)
        oldest = now - _SERVED_FOR
        while served and (len(served) > _SERVED or next(iter(served.values()))[0] < oldest):
            dropped, _ = served.popitem(last=False)
            caller, number = _rpc_number(dropped)
            if number > forgotten.get(caller, (0, 0.0))[0]:
                forgotten[caller] = (number, now)
                if len(forgotten) > 2 * _SERVED:  # callers long gone: let them go
                    for key in [k for k, (_, t) in forgotten.items() if t < now - _FORGOTTEN_FOR]:
                        del forgotten[key]

    def _was_forgotten(self, rid: str) -> bool:
        caller, number = _rpc_number(rid)
        return 0 < number <= self._forgotten.get(caller, (0, 0.0))[0]

    def _on_rpc_resp(self, core: RaftCore, m: Message) -> None:
        call = self._rpc_out.get(m.context)
        if call is None or not isinstance(m.payload, dict):
            return
        if m.payload.get("forgotten"):
            del self._rpc_out[m.context]
            settle(call.future, exc=ProposalTimeout(
                f"the rpc was not answered for over {_SERVED_FOR:.0f} s, and {m.src} no "
                "longer holds its answer: it may have run"))
            return
        if "redirect" in m.payload:  # it did not run: send again once a leader is known
            call.sent_to = None
            if core.leader != m.src:
                self._send_rpc(core, m.context)
            return
        del self._rpc_out[m.context]
        at = m.payload.get("at", m.payload.get("appended"))
        if not (isinstance(at, list) and len(at) == 2 and all(type(x) is int for x in at)):
            settle(call.future, exc=rebuild(m.payload.get("err")))
        else:  # an Append resolves with its LogEntry
            self.applier.wait_applied(at[0], at[1], call.future, core.log,
                                      m.payload.get("ok", ENTRY))

    # ---- snapshots ------------------------------------------------------------------

    def _take_snapshot(self, index: int, data: bytes) -> None:
        """On the apply thread: the application's state as of `index`, made durable off
        the loop thread (which only looks up the term and the sessions), then handed to
        the loop to compact."""
        with self.lock:
            core = self.core
            if core is None or index <= (core.snapshot.index if core.snapshot else 0):
                return
            term = core.log.term_at(index)
            assert term is not None
            snap = Snapshot(index, term, core.voters.voters, data, core.sessions_at(index))
        self.storage.save_snapshot(snap)
        self._inbox.put(Snapshotted(snap))

    # ---- reads ----------------------------------------------------------------------

    def _on_reads(self, core: RaftCore, reads: tuple[ReadState, ...]) -> None:
        """Read indexes from the core: a read resolves, and an rpc runs, once this node
        has applied its index."""
        for r in reads:
            fut = self._reads_out.pop(r.context, None)
            if fut is not None:
                self.applier.wait_applied(r.index, None, fut, core.log, r.index)
                continue
            parked = self._parked.get(r.context)
            if parked is not None and not parked.confirmed:
                parked.confirmed = True
                gate: Future[None] = Future()
                gate.add_done_callback(functools.partial(self._confirmed, RunRpc(r.context)))
                self.applier.wait_applied(r.index, None, gate, core.log, None)

    def _confirmed(self, run: RunRpc, _: Future[None]) -> None:
        self._inbox.put(run)

    def _ask_again(self, core: RaftCore, now: float) -> None:
        """A read index request or its answer may have been lost, or a new leader dropped
        it: ask again once per election timeout."""
        if now - self._reads_asked < self.options.election_timeout[0]:
            return
        self._reads_asked = now
        for context in self._reads_out:
            core.read_index(context)
        for rid, parked in self._parked.items():
            if not parked.confirmed:
                core.read_index(rid)


def _rpc_number(rid: str) -> tuple[str, int]:
    """(caller session, call number) of an rpc id `<session>:<n>`; (rid, 0) if not so."""
    caller, _, number = rid.rpartition(":")
    return (caller, int(number)) if number.isdigit() and number.isascii() else (rid, 0)


__all__ = ["LogEntry", "Loop"]
