"""The Raft core: a deterministic state machine with no I/O, no clock and no threads.

Drive it with `tick()`, `step(message)` and `propose(data)`; collect the work with
`ready()`; persist its hard state and entries, send its messages, apply its committed
entries, then call `advance(ready)`. Shaped after etcd-io/raft: `step` does the term
checks for every message and hands off to the handler of the current role.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from ._errors import ConfigError
from ._log import RaftLog
from ._types import Entry, EntryKind, HardState, Message, MsgType, Ready, Role

_RAFT_TYPES = frozenset(
    {
        MsgType.PRE_VOTE,
        MsgType.PRE_VOTE_RESP,
        MsgType.VOTE,
        MsgType.VOTE_RESP,
        MsgType.APPEND,
        MsgType.APPEND_RESP,
    }
)


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Parameters of one core. Times are in ticks."""

    id: str
    voters: tuple[str, ...]
    session: str
    election_ticks: tuple[int, int] = (10, 20)
    heartbeat_ticks: int = 2
    max_msg_entries: int = 512
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 64
    pre_vote: bool = True
    check_quorum: bool = True

    def validate(self) -> None:
        """Reject nonsense, naming the option."""
        if not self.id or not isinstance(self.id, str):
            raise ConfigError("id must be a non-empty string")
        if not self.voters or len(set(self.voters)) != len(self.voters):
            raise ConfigError("voters must be a non-empty list of distinct ids")
        lo, hi = self.election_ticks
        if not 1 <= lo <= hi:
            raise ConfigError("election_ticks must satisfy 1 <= min <= max")
        if not 1 <= self.heartbeat_ticks < lo:
            raise ConfigError("heartbeat_ticks must be at least 1 and below election_ticks")
        if self.max_msg_entries < 1 or self.max_msg_bytes < 1 or self.max_inflight < 1:
            raise ConfigError("max_msg_entries, max_msg_bytes and max_inflight must be >= 1")


class Progress:
    """The leader's view of one follower (etcd's tracker.Progress, simplified)."""

    __slots__ = ("hb_match", "inflight", "match", "next", "paused", "probe", "recent_active")

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.probe = True  # probe: one append at a time; else pipeline (replicate)
        self.paused = False
        self.inflight: deque[int] = deque()
        self.recent_active = False
        self.hb_match = -1

    def become_probe(self, next_index: int) -> None:
        self.probe, self.paused, self.next = True, False, next_index
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.probe, self.paused, self.next = False, False, self.match + 1
        self.inflight.clear()


class RaftCore:
    """One Raft peer. Not thread-safe: its driver serialises every call."""

    def __init__(
        self,
        config: CoreConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: tuple[Entry, ...] | list[Entry] = (),
    ) -> None:
        config.validate()
        self.cfg = config
        self.id = config.id
        self._rng = rng
        hs = hard_state or HardState()
        self.log = RaftLog(entries)
        self.term = hs.term
        self.vote = hs.vote
        self.log.commit = min(hs.commit, self.log.last_index)
        self._saved = HardState(hs.term, hs.vote, self.log.commit)
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self._quorum = len(config.voters) // 2 + 1
        self._peers = tuple(v for v in config.voters if v != self.id)
        self._msgs: list[Message] = []
        self._unstable_from: int | None = None
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = 0
        self._reset_timeout()
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self._sessions: dict[str, int] = {}  # leader: highest seq in the log per client
        # This node's own proposals, seq -> data, until they are seen committed.
        self._pending: dict[int, bytes] = {}
        self._next_seq = 1
        self._sent = 0  # highest seq sent to the proposal target
        self._acked = 0  # highest seq the target acknowledged holding
        self._target: str | None = None  # where proposals go: the leader, or a redirect
        self._resend_elapsed = 0

    # ---- inputs -------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._election_elapsed += 1
        lo = self.cfg.election_ticks[0]
        if self.role is Role.LEADER:
            if self.cfg.check_quorum and self._election_elapsed >= lo:
                self._election_elapsed = 0
                self._check_quorum()
                if self.role is not Role.LEADER:
                    return
            self._heartbeat_elapsed += 1
            if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
                self._heartbeat_elapsed = 0
                self._heartbeat()
            return
        if self.id in self.cfg.voters and self._election_elapsed >= self._timeout:
            self._campaign(pre=self.cfg.pre_vote)
        if self._pending and self._sent > self._acked:
            self._resend_elapsed += 1
            if self._resend_elapsed >= lo:
                self._resend_elapsed = 0
                self._sent = self._acked

    def propose(self, data: bytes) -> int:
        """Queue `data` for the log and return its sequence number in this node's session.

        It reaches the leader with the next `ready()`, and is retried until it is seen
        committed (a `ready().committed` entry with this session and seq).
        """
        seq = self._next_seq
        self._next_seq += 1
        self._pending[seq] = data
        return seq

    def append_now(self, data: bytes) -> Entry:
        """Leader only: append `data` in the current term at once, outside any session.

        It is never retried: if this leader loses the entry, it is gone, so a decision
        taken against this leader's log takes effect only if the entry commits.
        """
        if self.role is not Role.LEADER:
            raise RuntimeError("append_now on a node that is not the leader")
        entry = Entry(self.term, self.log.last_index + 1, data)
        self._append([entry])
        return entry

    @property
    def pending_proposals(self) -> int:
        return len(self._pending)

    def step(self, m: Message) -> None:
        """Handle one message addressed to this node."""
        if m.type is MsgType.PROPOSE:
            self._on_propose(m)
            return
        if m.type is MsgType.PROPOSE_RESP:
            self._on_propose_resp(m)
            return
        if m.type not in _RAFT_TYPES:
            return
        if m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE) and self._in_lease():
                return  # a leader was heard recently: do not let this candidate disrupt it
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change terms
            else:
                self._become_follower(m.term, m.src if m.type is MsgType.APPEND else None)
        elif m.term < self.term:
            if m.type is MsgType.APPEND:
                # A stale leader: tell it our term so that it steps down.
                self._send(MsgType.APPEND_RESP, m.src)
            elif m.type is MsgType.PRE_VOTE:
                self._send(MsgType.PRE_VOTE_RESP, m.src, reject=True)
            return
        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._on_vote_request(m)
        elif self.role is Role.LEADER:
            if m.type is MsgType.APPEND_RESP:
                self._on_append_resp(m)
        elif m.type is MsgType.APPEND:
            if self.role is not Role.FOLLOWER:
                self._become_follower(m.term, m.src)
            self._on_append(m)
        elif m.type is MsgType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE:
            if m.term == self.term + 1 or m.reject:
                self._tally(m)
        elif m.type is MsgType.VOTE_RESP and self.role is Role.CANDIDATE:
            self._tally(m)

    # ---- outputs ------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._unstable_from is not None
            or self.log.commit > self.log.applied
            or self._hard_state() != self._saved
            or self._has_proposals_to_send()
        )

    def ready(self) -> Ready:
        """Collect what to persist, send and apply. Messages and entries are handed over
        once; committed entries are handed again until `advance` acknowledges them."""
        self._flush_proposals()
        if self.role is Role.LEADER:
            for peer in self._peers:
                self._send_appends(peer)
        hs = self._hard_state()
        entries: tuple[Entry, ...] = ()
        if self._unstable_from is not None:
            entries = tuple(self.log.entries_from(self._unstable_from))
            self._unstable_from = None
        rd = Ready(
            hard_state=hs if hs != self._saved else None,
            entries=entries,
            messages=tuple(self._msgs),
            committed=tuple(self.log.slice(self.log.applied + 1, self.log.commit + 1,
                                           1 << 62, 1 << 62)),
        )
        self._saved = hs
        self._msgs = []
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that `rd` was persisted, sent and applied."""
        if rd.committed:
            self.log.applied = max(self.log.applied, rd.committed[-1].index)
            for e in rd.committed:
                if e.client == self.cfg.session:
                    self._pending.pop(e.seq, None)

    def progress(self) -> dict[str, int]:
        """The leader's match index per follower (empty on a follower)."""
        return {p: pr.match for p, pr in self._progress.items()}

    # ---- elections ----------------------------------------------------------------

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.leader is not None
            and self._election_elapsed < self.cfg.election_ticks[0]
        )

    def _reset_timeout(self) -> None:
        lo, hi = self.cfg.election_ticks
        self._timeout = self._rng.randint(lo, hi)

    def _campaign(self, pre: bool) -> None:
        self._election_elapsed = 0
        self._reset_timeout()
        self._votes = {self.id: True}
        self._set_leader(None)
        if pre:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
            kind = MsgType.PRE_VOTE
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            term = self.term
            kind = MsgType.VOTE
        if self._quorum == 1:
            self._won(pre)
            return
        for peer in self._peers:
            self._msgs.append(
                Message(kind, self.id, peer, term=term, index=self.log.last_index,
                        log_term=self.log.last_term)
            )

    def _on_vote_request(self, m: Message) -> None:
        pre = m.type is MsgType.PRE_VOTE
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.leader is None)
            or (pre and m.term > self.term)
        )
        resp = MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._msgs.append(Message(resp, self.id, m.src, term=m.term))
            if not pre:
                self.vote = m.src
                self._election_elapsed = 0
        else:
            self._send(resp, m.src, reject=True)

    def _tally(self, m: Message) -> None:
        self._votes[m.src] = not m.reject
        granted = sum(1 for v in self.cfg.voters if self._votes.get(v) is True)
        rejected = sum(1 for v in self.cfg.voters if self._votes.get(v) is False)
        if granted >= self._quorum:
            self._won(pre=self.role is Role.PRE_CANDIDATE)
        elif rejected >= self._quorum:
            self._become_follower(self.term, None)

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False)
        else:
            self._become_leader()

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term, self.vote = term, None
            self._sent = self._acked = 0  # what an older term's leader acked may be lost
        self.role = Role.FOLLOWER
        self._progress = {}
        self._set_leader(leader)
        self._reset_timeout()

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self._set_leader(self.id)
        self._election_elapsed = self._heartbeat_elapsed = 0
        last = self.log.last_index
        self._progress = {p: Progress(last + 1) for p in self._peers}
        self._sessions = {}
        for e in self.log.entries_from(1):
            if e.client:
                self._sessions[e.client] = e.seq
        self._append([Entry(self.term, last + 1, b"", EntryKind.NOOP)])

    def _check_quorum(self) -> None:
        active = 1 + sum(1 for p in self._peers if self._progress[p].recent_active)
        for pr in self._progress.values():
            pr.recent_active = False
        if active < self._quorum:
            self._become_follower(self.term, None)

    def _set_leader(self, leader: str | None) -> None:
        if leader != self.leader:
            self.leader = leader
            self._target = leader
            self._sent = self._acked = 0

    # ---- replication ----------------------------------------------------------------

    def _append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self.log.append(entries)
        first = entries[0].index
        if self._unstable_from is None or first < self._unstable_from:
            self._unstable_from = first
        if self.role is Role.LEADER:
            self._maybe_commit()

    def _maybe_commit(self) -> None:
        matches = sorted(
            [self.log.last_index] + [self._progress[p].match for p in self._peers], reverse=True
        )
        n = matches[self._quorum - 1]
        # §5.4.2: only an entry of the current term is committed by counting replicas.
        if n > self.log.commit and self.log.term_at(n) == self.term:
            self.log.commit = n

    def _heartbeat(self) -> None:
        last = self.log.last_index
        for peer in self._peers:
            pr = self._progress[peer]
            if not pr.probe and pr.match == pr.hb_match and pr.match < last:
                pr.become_probe(pr.match + 1)  # no progress for a whole heartbeat: resend
            pr.hb_match = pr.match
            if pr.probe:
                pr.paused = False
                self._send_append(peer, pr, empty_ok=True)
            else:
                self._msgs.append(
                    Message(MsgType.APPEND, self.id, peer, term=self.term, index=pr.match,
                            log_term=self.log.term_at(pr.match) or 0, commit=self.log.commit)
                )

    def _send_appends(self, peer: str) -> None:
        pr = self._progress[peer]
        while pr.next <= self.log.last_index and not (
            pr.paused if pr.probe else len(pr.inflight) >= self.cfg.max_inflight
        ):
            self._send_append(peer, pr, empty_ok=False)

    def _send_append(self, peer: str, pr: Progress, empty_ok: bool) -> None:
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:  # compacted away: needs a snapshot (not yet supported)
            raise AssertionError(f"entry {prev} for {peer} is not in the log")
        entries = tuple(
            self.log.slice(pr.next, self.log.last_index + 1, self.cfg.max_msg_entries,
                           self.cfg.max_msg_bytes)
        )
        if not entries and not empty_ok:
            return
        self._msgs.append(
            Message(MsgType.APPEND, self.id, peer, term=self.term, index=prev,
                    log_term=prev_term, commit=self.log.commit, entries=entries)
        )
        if entries:
            if pr.probe:
                pr.paused = True
            else:
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)

    def _on_append(self, m: Message) -> None:
        self._election_elapsed = 0
        self._set_leader(m.src)
        log = self.log
        if m.index < log.commit:
            self._send(MsgType.APPEND_RESP, m.src, index=log.commit)
            return
        if not log.matches(m.index, m.log_term):
            hint = log.conflict_hint(m.index, m.log_term)
            self._send(MsgType.APPEND_RESP, m.src, index=m.index, reject=True, hint=hint,
                       hint_term=log.term_at(hint) or 0)
            return
        for i, e in enumerate(m.entries):
            if log.term_at(e.index) != e.term:
                # §5.3: delete the conflicting entry and all that follow it, then append.
                log.truncate_after(e.index - 1)
                self._append(list(m.entries[i:]))
                break
        last_new = m.index + len(m.entries)
        if m.commit > log.commit:
            log.commit = max(log.commit, min(m.commit, last_new))
        self._send(MsgType.APPEND_RESP, m.src, index=last_new)

    def _on_append_resp(self, m: Message) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if m.reject:
            if (m.index == pr.match and m.hint < pr.match
                    and (not pr.probe or m.index == pr.next - 1)):
                # The follower lacks entries it acknowledged: it restarted without durable
                # storage, or this reject is stale (sent before its ack, delivered after).
                # Probe from its hint but keep match: lowering match on stale rejects
                # stalls replication for good when the network reorders.
                pr.become_probe(self.log.conflict_hint(m.hint, m.hint_term) + 1)
                self._send_append(m.src, pr, empty_ok=True)
                return
            if m.index <= pr.match or (pr.probe and m.index != pr.next - 1):
                return  # stale
            nxt = self.log.conflict_hint(m.hint, m.hint_term) + 1
            pr.become_probe(max(pr.match + 1, min(nxt, m.index)))
            self._send_append(m.src, pr, empty_ok=True)
            return
        if m.index > pr.match:
            pr.match = m.index
            pr.next = max(pr.next, m.index + 1)
            while pr.inflight and pr.inflight[0] <= m.index:
                pr.inflight.popleft()
            self._maybe_commit()
        if pr.probe:
            pr.become_replicate()
        self._send_appends(m.src)  # has_ready() does not look for sendable entries

    # ---- proposals --------------------------------------------------------------------

    def _has_proposals_to_send(self) -> bool:
        target = self._target
        return (
            bool(self._pending)
            and target is not None
            and (target != self.id or self.role is Role.LEADER)
            and self._sent <= self._acked  # one batch in flight, so reordering makes no gaps
            and max(self._sent, self._acked) < self._next_seq - 1
        )

    def _flush_proposals(self) -> None:
        if not self._has_proposals_to_send():
            return
        first = max(self._sent, self._acked, next(iter(self._pending)) - 1) + 1
        last = self._next_seq - 1
        target = self._target
        assert target is not None
        if target == self.id:
            if self.role is Role.LEADER:
                self._accept(self.cfg.session, [
                    Entry(0, 0, self._pending[s], EntryKind.NORMAL, self.cfg.session, s)
                    for s in range(first, last + 1)
                ])
                self._sent = self._acked = last
            return
        # One batch per round trip: a batch sent before the previous one is answered could
        # arrive first, be refused as a gap, and make every answer trigger a resend.
        hi = min(first + self.cfg.max_msg_entries, last + 1)
        batch = tuple(
            Entry(0, 0, self._pending[s], EntryKind.NORMAL, self.cfg.session, s)
            for s in range(first, hi)
        )
        self._msgs.append(Message(MsgType.PROPOSE, self.id, target, entries=batch))
        self._sent = hi - 1

    def _accept(self, client: str, entries: list[Entry] | tuple[Entry, ...]) -> tuple[int, int]:
        """Leader: append the client's entries that come next in its sequence, once each.
        Returns (highest seq held, seq wanted next if a gap was seen else 0)."""
        top = self._sessions.get(client, 0)
        index = self.log.last_index
        new: list[Entry] = []
        gap = 0
        for e in entries:
            if e.seq <= top:
                continue
            if e.seq != top + 1:
                gap = top + 1
                break
            index += 1
            top = e.seq
            new.append(Entry(self.term, index, e.data, EntryKind.NORMAL, client, e.seq))
        self._sessions[client] = top
        self._append(new)
        return top, gap

    def _on_propose(self, m: Message) -> None:
        client = m.entries[0].client if m.entries else ""
        if self.role is not Role.LEADER:
            self._msgs.append(Message(MsgType.PROPOSE_RESP, self.id, m.src, reject=True,
                                      context=client, payload=self.leader))
            return
        if not client or any(e.client != client for e in m.entries):
            return
        top, gap = self._accept(client, m.entries)
        self._msgs.append(Message(MsgType.PROPOSE_RESP, self.id, m.src, context=client,
                                  hint=top, index=gap))

    def _on_propose_resp(self, m: Message) -> None:
        if m.context != self.cfg.session or m.src != self._target:
            return
        if m.reject:
            redirect = m.payload
            if redirect in self.cfg.voters and redirect not in (m.src, self.id):
                self._target = redirect
                self._sent = self._acked = 0
            return  # else the resend timer retries: one reject per batch must not resend all
        self._acked = max(self._acked, m.hint)
        self._resend_elapsed = 0
        if m.index:  # the target lacks seq m.index: resend from there
            self._sent = max(self._acked, min(self._sent, m.index - 1))

    # ---- helpers ----------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def _send(self, kind: MsgType, to: str, index: int = 0, reject: bool = False,
              hint: int = 0, hint_term: int = 0) -> None:
        self._msgs.append(Message(kind, self.id, to, term=self.term, index=index,
                                  reject=reject, hint=hint, hint_term=hint_term))
