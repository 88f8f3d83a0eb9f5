"""The Raft core: a deterministic state machine with no I/O, no clock and no threads.

Drive it with `tick()`, `step(message)` and `propose(data)`; collect the work with
`ready()`; persist its hard state and entries first, then send its messages and apply
its committed entries (in either order), then call `advance(ready)`. Shaped after
etcd-io/raft: `step` does the term checks for every message and hands off to the step
function of the current role, which `_become_follower`, `_campaign` and `_become_leader`
swap, along with the tick function.
"""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._config import CoreConfig
from ._log import RaftLog
from ._progress import Progress, ProgressState
from ._quorum import MajorityConfig, VoteResult
from ._sessions import ProposalQueue, SessionTable, owner_of
from ._types import (
    Entry,
    EntryKind,
    HardState,
    Message,
    MsgType,
    ReadState,
    Ready,
    Role,
    Snapshot,
)

_RAFT_TYPES = frozenset(
    {
        MsgType.PRE_VOTE,
        MsgType.PRE_VOTE_RESP,
        MsgType.VOTE,
        MsgType.VOTE_RESP,
        MsgType.APPEND,
        MsgType.APPEND_RESP,
        MsgType.SNAPSHOT,
        MsgType.SNAPSHOT_RESP,
    }
)
_FROM_LEADER = frozenset({MsgType.APPEND, MsgType.SNAPSHOT})
_VOTE_REQUESTS = frozenset({MsgType.VOTE, MsgType.PRE_VOTE})
_ROUND_CARRIERS = frozenset({MsgType.APPEND, MsgType.APPEND_RESP, MsgType.SNAPSHOT,
                             MsgType.SNAPSHOT_RESP})
_READS = frozenset({MsgType.READ_INDEX, MsgType.READ_INDEX_RESP})
_UNBOUNDED = 1 << 62


class RaftCore:
    """One Raft peer. Not thread-safe: its driver serialises every call."""

    def __init__(
        self,
        config: CoreConfig,
        rng: random.Random,
        hard_state: HardState | None = None,
        entries: tuple[Entry, ...] | list[Entry] = (),
        snapshot: Snapshot | None = None,
    ) -> None:
        config.validate()
        self.cfg = config
        # heartbeats a chunk may go unanswered, by a follower that answers others, before
        # it is sent again: about an election timeout
        self._chunk_wait = max(config.election_ticks[0] // config.heartbeat_ticks, 2)
        self.id = config.id
        self._rng = rng
        hs = hard_state or HardState()
        # The latest snapshot: what the log's compacted prefix was, and what a follower
        # behind it is sent. Its sessions are the base of the leader's de-duplication.
        self.snapshot = snapshot
        base = 0 if snapshot is None else snapshot.index
        self.log = RaftLog([e for e in entries if e.index > base], base,
                           0 if snapshot is None else snapshot.term)
        self._base_sessions: dict[str, int] = dict(snapshot.sessions if snapshot else ())
        self._incoming: _Incoming | None = None  # a snapshot being received, in chunks
        self._outgoing: dict[str, Snapshot] = {}  # leader: the snapshot each follower gets
        self._received: Snapshot | None = None  # installed: the next ready() hands it over
        self.term = hs.term
        self.vote = hs.vote
        self.log.commit = max(min(hs.commit, self.log.last_index), base)
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.voters = MajorityConfig(config.voters)
        self._peers = tuple(v for v in config.voters if v != self.id)
        self.proposals = ProposalQueue(config.session)
        self.sessions = SessionTable()
        # Ready bookkeeping: what the next ready() hands over.
        self._saved = HardState(hs.term, hs.vote, self.log.commit)
        self._msgs: list[Message] = []
        self._unstable_from: int | None = None
        # Per role: the step and tick functions, election state, the leader's progress.
        self._step: Callable[[Message], None] = self._step_follower
        self._tick: Callable[[], None] = self._tick_election
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._timeout = 0
        self._reset_timeout()
        self._votes: dict[str, bool] = {}
        self._progress: dict[str, Progress] = {}
        self.malformed = 0  # messages dropped by step() for what no correct peer sends
        # the incarnation of this node's id that supersedes its session at the leader
        # (another process with this id, or a clock that went back): its proposals are
        # refused there; the driver says so
        self.superseded_by = 0
        # ReadIndex (§6.4): a leader serves a read once a quorum has answered a round of
        # heartbeats sent after the read arrived. Rounds only grow; APPEND carries the
        # latest, its answer echoes it.
        self._read_round = 0
        self._round_context = ""  # str(_read_round), as appends carry it
        self._round_wanted = False
        self._acked_rounds: dict[str, int] = {}  # the highest round each peer answered
        self._reads: list[tuple[int, int, str, str]] = []  # (round, index, context, asker)
        self._reads_early: list[tuple[str, str]] = []  # asked before this term's first commit
        self._read_states: list[ReadState] = []

    # ---- inputs -------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self._election_elapsed += 1
        self._tick()

    def ticks_until_due(self) -> int:
        """How many ticks may pass before one of them can do anything (at least 1): a
        driver with a real clock may sleep that long when no message comes."""
        cfg = self.cfg
        if self.role is Role.LEADER:
            due = cfg.heartbeat_ticks - self._heartbeat_elapsed
            if cfg.check_quorum:
                due = min(due, cfg.election_ticks[0] - self._election_elapsed)
        else:
            due = _UNBOUNDED
            if self.id in self.voters:
                due = self._timeout - self._election_elapsed
            resend = self.proposals.ticks_until_resend(cfg.election_ticks[0])
            if resend is not None:
                due = min(due, resend)
        return max(due, 1)

    def propose(self, data: bytes) -> int:
        """Queue `data` for the log and return its sequence number in this node's session.

        It reaches the leader with the next `ready()`, and is retried until it is seen
        committed (a `ready().committed` entry with this session and seq).
        """
        return self.proposals.add(data)

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

    def read_index(self, context: str) -> None:
        """Ask for a read index; a later `ready()` hands it back as a `ReadState` named
        `context`. A follower asks its leader; with no leader known, or when a message is
        lost or the leader steps down, nothing comes back and the driver asks again."""
        if self.role is Role.LEADER:
            self._leader_read(context, self.id)
        elif self.leader is not None:
            self._msgs.append(Message(MsgType.READ_INDEX, self.id, self.leader,
                                      term=self.term, context=context))

    def compact(self, snapshot: Snapshot, keep: int = 0) -> None:
        """The driver persisted `snapshot` (of applied entries): drop the log up to it,
        but for the last `keep` entries, kept for followers a little behind."""
        if snapshot.index > self.log.applied:
            raise ValueError(f"snapshot {snapshot.index} is beyond what was applied "
                             f"({self.log.applied})")
        if self.snapshot is None or snapshot.index > self.snapshot.index:
            self.snapshot = snapshot
            self._base_sessions = dict(snapshot.sessions)
        self.log.compact_to(max(self.log.offset, min(snapshot.index - keep,
                                                     self.log.applied)))

    def sessions_at(self, index: int) -> tuple[tuple[str, int], ...]:
        """The highest seq of each session in the log up to `index`, for a snapshot
        there (`index` at or after the latest snapshot, and held); superseded sessions
        are left out."""
        first = self.snapshot.index + 1 if self.snapshot is not None else 1
        table = SessionTable()
        table.rebuild(self._base_sessions.items(),
                      self.log.slice(first, index + 1, _UNBOUNDED, _UNBOUNDED))
        return tuple(table.items())

    @property
    def incoming_snapshot_bytes(self) -> int:
        """How much of a snapshot from the leader has arrived so far (0 when none is)."""
        return len(self._incoming.data) if self._incoming is not None else 0

    @property
    def pending_proposals(self) -> int:
        return len(self.proposals)

    def step(self, m: Message) -> None:
        """Handle one message addressed to this node. A message that breaks what Raft
        guarantees of a sender (indexes out of order, terms from the future) is dropped
        and counted in `malformed`: a forged or corrupted peer never raises here."""
        if not _well_formed(m):
            self.malformed += 1
            return
        if m.type in _RAFT_TYPES:
            if not self._check_term(m):
                return
            if m.type in _VOTE_REQUESTS:
                self._handle_vote_request(m)
                return
        elif m.type is MsgType.PROPOSE_RESP:
            self._handle_propose_resp(m)
            return
        elif m.type is MsgType.READ_INDEX:
            if self.role is Role.LEADER:
                self._leader_read(m.context, m.src)
            return
        elif m.type is MsgType.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.context, m.index))
            return
        elif m.type is not MsgType.PROPOSE:
            return
        self._step(m)

    def _check_term(self, m: Message) -> bool:
        """The term checks every Raft message goes through first; False drops it."""
        if m.term > self.term:
            if m.type in _VOTE_REQUESTS and self._in_lease():
                return False  # a leader was heard recently: this candidate must not disrupt it
            if m.type is MsgType.PRE_VOTE or (m.type is MsgType.PRE_VOTE_RESP and not m.reject):
                return True  # pre-votes never change terms
            self._become_follower(m.term, m.src if m.type in _FROM_LEADER else None)
        elif m.term < self.term:
            if m.type in _FROM_LEADER:
                # A stale leader: tell it our term so that it steps down.
                self._send(MsgType.APPEND_RESP, m.src)
            elif m.type is MsgType.PRE_VOTE:
                self._send(MsgType.PRE_VOTE_RESP, m.src, reject=True)
            return False
        return True

    # ---- outputs ------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._unstable_from is not None
            or self.log.commit > self.log.applied
            or self._hard_state() != self._saved
            or self._proposals_to_send()
            or self._commit_to_send()
            or self._round_wanted
            or bool(self._read_states)
            or self._received is not None
        )

    def _commit_to_send(self) -> bool:
        commit = self.log.commit
        return any(pr.needs_commit(commit) for pr in self._progress.values())

    def ready(self) -> Ready:
        """Collect what to persist, send and apply. Messages and entries are handed over
        once; committed entries are handed again until `advance` acknowledges them."""
        self._flush_proposals()
        if self.role is Role.LEADER:
            if self._round_wanted:  # one round of heartbeats for the reads that came
                self._round_wanted = False
                self._read_round += 1
                self._round_context = str(self._read_round)
                for peer in self._peers:
                    self._send_commit(peer, self._progress[peer])
                self._release_reads()
            commit = self.log.commit
            for peer in self._peers:
                self._send_appends(peer)
                pr = self._progress[peer]
                if pr.needs_commit(commit):  # the commit index travels at once, coalesced
                    self._send_commit(peer, pr)
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
                                           _UNBOUNDED, _UNBOUNDED)),
            reads=tuple(self._read_states),
            snapshot=self._received,
        )
        self._saved = hs
        self._msgs = []
        self._read_states = []
        self._received = None
        return rd

    def advance(self, rd: Ready) -> None:
        """Acknowledge that `rd` was persisted, sent and applied."""
        if rd.committed:
            self.log.applied = max(self.log.applied, rd.committed[-1].index)
            session = self.cfg.session
            for e in rd.committed:
                if e.client == session:
                    self.proposals.committed(e.seq)

    def progress(self) -> dict[str, int]:
        """The leader's match index per follower (empty on a follower)."""
        return {p: pr.match for p, pr in self._progress.items()}

    # ---- role transitions -------------------------------------------------------------

    def _become_follower(self, term: int, leader: str | None) -> None:
        if term != self.term:
            self.term, self.vote = term, None
            self.proposals.forget_acks()  # what an older term's leader acked may be lost
        self.role = Role.FOLLOWER
        self._step, self._tick = self._step_follower, self._tick_election
        self._progress, self._outgoing = {}, {}
        self._drop_reads()
        self._set_leader(leader)
        self._reset_timeout()

    def _campaign(self, pre: bool) -> None:
        self._election_elapsed = 0
        self._reset_timeout()
        self._votes = {self.id: True}
        self._set_leader(None)
        self._step, self._tick = self._step_candidate, self._tick_election
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
        if self.voters.vote_result(self._votes) is VoteResult.WON:
            self._won(pre)
            return
        for peer in self._peers:
            self._msgs.append(
                Message(kind, self.id, peer, term=term, index=self.log.last_index,
                        log_term=self.log.last_term)
            )

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self._step, self._tick = self._step_leader, self._tick_heartbeat
        self._set_leader(self.id)
        self._election_elapsed = self._heartbeat_elapsed = 0
        last = self.log.last_index
        cfg = self.cfg
        self._progress = {p: Progress(last + 1, cfg.max_inflight, cfg.max_inflight_bytes)
                          for p in self._peers}
        self._drop_reads()
        self._outgoing = {}
        self.sessions.rebuild(self._base_sessions.items(), self.log.entries_from(1))
        self._append([Entry(self.term, last + 1, b"", EntryKind.NOOP)])

    def _won(self, pre: bool) -> None:
        if pre:
            self._campaign(pre=False)
        else:
            self._become_leader()

    def _set_leader(self, leader: str | None) -> None:
        # Every contact of a leader resets where proposals go: a redirect sent them to
        # another node, and this leader may have been learnt again in a new term.
        if leader != self.leader or (leader is not None and self.proposals.target != leader):
            self.leader = leader
            self.proposals.retarget(leader)

    # ---- per-role tick functions --------------------------------------------------------

    def _tick_election(self) -> None:
        """Follower and candidates: campaign when the election timeout runs out."""
        if self.id in self.voters and self._election_elapsed >= self._timeout:
            self._campaign(pre=self.cfg.pre_vote)
        self.proposals.tick(self.cfg.election_ticks[0])

    def _tick_heartbeat(self) -> None:
        """Leader: check the quorum once per election timeout, heartbeat on schedule."""
        if self.cfg.check_quorum and self._election_elapsed >= self.cfg.election_ticks[0]:
            self._election_elapsed = 0
            self._check_quorum()
            if self.role is not Role.LEADER:
                return
        self._heartbeat_elapsed += 1
        if self._heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._heartbeat()

    # ---- per-role step functions --------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        if m.type is MsgType.APPEND_RESP:
            self._handle_append_resp(m)
        elif m.type is MsgType.SNAPSHOT_RESP:
            self._handle_snapshot_resp(m)
        elif m.type is MsgType.PROPOSE:
            self._handle_propose(m)

    def _step_candidate(self, m: Message) -> None:
        if m.type in _FROM_LEADER:  # a leader of this term exists
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif m.type is MsgType.PROPOSE:
            self._redirect_proposals(m)
        elif m.type is MsgType.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE:
            if m.term == self.term + 1 or m.reject:
                self._tally(m)
        elif m.type is MsgType.VOTE_RESP and self.role is Role.CANDIDATE:
            self._tally(m)

    def _step_follower(self, m: Message) -> None:
        if m.type is MsgType.APPEND:
            self._handle_append(m)
        elif m.type is MsgType.SNAPSHOT:
            self._handle_snapshot(m)
        elif m.type is MsgType.PROPOSE:
            self._redirect_proposals(m)

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

    def _handle_vote_request(self, m: Message) -> None:
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
        result = self.voters.vote_result(self._votes)
        if result is VoteResult.WON:
            self._won(pre=self.role is Role.PRE_CANDIDATE)
        elif result is VoteResult.LOST:
            self._become_follower(self.term, None)

    def _check_quorum(self) -> None:
        active = {self.id, *(p for p, pr in self._progress.items() if pr.recent_active)}
        for pr in self._progress.values():
            pr.recent_active = False
        if not self.voters.is_active(active):
            self._become_follower(self.term, None)

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
        match = {self.id: self.log.last_index, **self.progress()}
        n = self.voters.committed_index(match)
        # §5.4.2: only an entry of the current term is committed by counting replicas.
        if n > self.log.commit and self.log.term_at(n) == self.term:
            self.log.commit = n
            early, self._reads_early = self._reads_early, []
            for context, asker in early:
                self._leader_read(context, asker)

    def _heartbeat(self) -> None:
        last = self.log.last_index
        for peer in self._peers:
            pr = self._progress[peer]
            pr.heartbeat(last)
            if pr.state is ProgressState.SNAPSHOT:
                if not pr.probe_sent or pr.chunk_lost(self._chunk_wait):
                    self._send_chunk(peer, pr)
                else:  # an answer to it shows the follower is there
                    self._send_commit(peer, pr)
            elif pr.state is ProgressState.PROBE and not pr.probe_sent:
                self._send_append(peer, pr, empty_ok=True)
            else:
                self._send_commit(peer, pr)

    def _send_commit(self, peer: str, pr: Progress) -> None:
        """An empty append at the follower's match: a heartbeat, carrying the commit."""
        commit = self.log.commit
        self._msgs.append(
            Message(MsgType.APPEND, self.id, peer, term=self.term, index=pr.match,
                    log_term=self.log.term_at(pr.match) or 0, commit=commit,
                    context=self._round_context)
        )
        pr.sent_commit(commit, pr.match)

    def _send_appends(self, peer: str) -> None:
        pr = self._progress[peer]
        while pr.next <= self.log.last_index and not pr.is_paused():
            self._send_append(peer, pr, empty_ok=False)

    def _send_append(self, peer: str, pr: Progress, empty_ok: bool) -> None:
        prev = pr.next - 1
        prev_term = self.log.term_at(prev)
        if prev_term is None:  # compacted away: the follower needs the snapshot
            assert self.snapshot is not None
            self._outgoing[peer] = self.snapshot  # kept to the end, if newer ones come
            pr.become_snapshot(self.snapshot.index)
            self._send_chunk(peer, pr)
            return
        entries = tuple(
            self.log.slice(pr.next, self.log.last_index + 1, self.cfg.max_msg_entries,
                           self.cfg.max_msg_bytes)
        )
        if not entries and not empty_ok:
            return
        self._msgs.append(
            Message(MsgType.APPEND, self.id, peer, term=self.term, index=prev,
                    log_term=prev_term, commit=self.log.commit, entries=entries,
                    context=self._round_context)
        )
        pr.sent_commit(self.log.commit, prev + len(entries))
        if entries:
            pr.sent_entries(entries[-1].index, self.log.size(pr.next, entries[-1].index + 1))

    def _handle_append(self, m: Message) -> None:
        self._election_elapsed = 0
        self._set_leader(m.src)
        log = self.log
        if m.index < log.commit:
            self._send(MsgType.APPEND_RESP, m.src, index=log.commit, context=m.context)
            return
        if not log.matches(m.index, m.log_term):
            hint = log.conflict_hint(m.index, m.log_term)
            self._send(MsgType.APPEND_RESP, m.src, index=m.index, reject=True, hint=hint,
                       hint_term=log.term_at(hint) or 0, context=m.context)
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
        self._send(MsgType.APPEND_RESP, m.src, index=last_new, context=m.context)

    def _handle_append_resp(self, m: Message) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        if m.index > self.log.last_index:  # it cannot hold what this leader never sent
            self.malformed += 1
            return
        pr.recent_active = True
        pr.responded()
        if not self._ack_round(m):
            return
        if m.reject:
            hint_next = self.log.conflict_hint(m.hint, m.hint_term) + 1
            if pr.maybe_decr_to(m.index, m.hint, hint_next):
                self._outgoing.pop(m.src, None)  # probing again (it may need a newer one)
                self._send_append(m.src, pr, empty_ok=True)
            return
        if pr.maybe_update(m.index):
            self._maybe_commit()
        if pr.state is ProgressState.SNAPSHOT:
            if pr.match < pr.pending_snapshot:
                return  # an answer from before the snapshot was sent
            pr.become_probe(pr.match + 1)
            self._outgoing.pop(m.src, None)
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        self._send_appends(m.src)  # has_ready() does not look for sendable entries

    def _ack_round(self, m: Message) -> bool:
        """Any answer in this term confirms the read rounds it echoes; False for a round
        never sent (counted as malformed)."""
        if not m.context:
            return True
        answered = int(m.context)
        if answered > self._read_round:
            self.malformed += 1
            return False
        if answered > self._acked_rounds.get(m.src, 0):
            self._acked_rounds[m.src] = answered
            self._release_reads()
        return True

    # ---- snapshots (InstallSnapshot, in chunks) -------------------------------------------

    def _send_chunk(self, peer: str, pr: Progress) -> None:
        """The chunk of its snapshot the follower asked for; one at a time."""
        snap = self._outgoing[peer]
        at = pr.snapshot_offset
        payload: dict[str, Any] = {
            "data": base64.b64encode(snap.data[at : at + self.cfg.max_snapshot_chunk]).decode()}
        if at == 0:
            payload["voters"] = list(snap.voters)
            payload["sessions"] = [list(s) for s in snap.sessions]
        self._msgs.append(
            Message(MsgType.SNAPSHOT, self.id, peer, term=self.term, index=snap.index,
                    log_term=snap.term, commit=self.log.commit, hint=at,
                    hint_term=len(snap.data), context=self._round_context, payload=payload)
        )
        pr.sent_chunk()

    def _handle_snapshot_resp(self, m: Message) -> None:
        pr = self._progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        if not self._ack_round(m) or pr.state is not ProgressState.SNAPSHOT:
            return
        if m.index != pr.pending_snapshot:
            return  # about a snapshot this leader no longer sends
        if m.hint > len(self._outgoing[m.src].data):
            self.malformed += 1
            return
        if m.hint == pr.snapshot_offset and pr.probe_sent:
            return  # the answer to a copy: the chunk it asks for is on its way
        pr.snapshot_offset = m.hint
        self._send_chunk(m.src, pr)

    def _handle_snapshot(self, m: Message) -> None:
        self._election_elapsed = 0
        self._set_leader(m.src)
        log = self.log
        if m.index <= log.commit:  # it holds all of that already
            self._send(MsgType.APPEND_RESP, m.src, index=log.commit, context=m.context)
            return
        if log.matches(m.index, m.log_term):  # §7: the log goes on past it; keep that
            log.commit = m.index
            self._incoming = None
            self._send(MsgType.APPEND_RESP, m.src, index=m.index, context=m.context)
            return
        chunk = _chunk(m)
        if chunk is None:
            self.malformed += 1
            return
        inc = self._incoming
        if m.hint == 0:
            inc = self._incoming = _Incoming(m.index, m.log_term, m.hint_term, *chunk[1:])
        same = inc is not None and (inc.index, inc.term, inc.size) == (m.index, m.log_term,
                                                                          m.hint_term)
        if inc is None or not same or m.hint != len(inc.data):
            want = len(inc.data) if inc is not None and same else 0
            self._send(MsgType.SNAPSHOT_RESP, m.src, index=m.index, hint=want,
                       context=m.context)
            return
        inc.data += chunk[0]
        if len(inc.data) > inc.size:
            self._incoming = None
            self.malformed += 1
            return
        if len(inc.data) < inc.size:
            self._send(MsgType.SNAPSHOT_RESP, m.src, index=m.index, hint=len(inc.data),
                       context=m.context)
            return
        self._incoming = None
        snap = Snapshot(inc.index, inc.term, inc.voters, bytes(inc.data), inc.sessions)
        # Nothing of this log follows the snapshot (it does not hold the snapshot's last
        # entry): start over from it.
        log.restore(snap.index, snap.term)
        self._unstable_from = None
        self.snapshot = self._received = snap
        self._base_sessions = dict(snap.sessions)
        self.proposals.committed_through(self._base_sessions.get(self.cfg.session, 0))
        self._send(MsgType.APPEND_RESP, m.src, index=snap.index, context=m.context)

    # ---- reads (ReadIndex, §6.4) ------------------------------------------------------

    def _leader_read(self, context: str, asker: str) -> None:
        if self.log.term_at(self.log.commit) != self.term:
            # Until an entry of its own term commits, a leader may not know the commit
            # index: the read waits for its no-op.
            self._reads_early.append((context, asker))
            return
        self._reads.append((self._read_round + 1, self.log.commit, context, asker))
        self._round_wanted = True

    def _release_reads(self) -> None:
        """Serve the reads whose round a quorum (this leader included) has answered."""
        if not self._reads:
            return
        confirmed = self.voters.committed_index({**self._acked_rounds,
                                                 self.id: self._read_round})
        served = 0
        for round_, index, context, asker in self._reads:
            if round_ > confirmed:
                break
            served += 1
            if asker == self.id:
                self._read_states.append(ReadState(context, index))
            else:
                self._msgs.append(Message(MsgType.READ_INDEX_RESP, self.id, asker,
                                          term=self.term, index=index, context=context))
        del self._reads[:served]

    def _drop_reads(self) -> None:
        """A change of role: reads not yet confirmed are dropped (their askers retry)."""
        self._reads, self._reads_early = [], []
        self._acked_rounds = {}
        self._round_wanted = False

    # ---- proposals (the session protocol) -----------------------------------------------

    def _proposals_to_send(self) -> bool:
        q = self.proposals
        return q.sendable() and (q.target != self.id or self.role is Role.LEADER)

    def _flush_proposals(self) -> None:
        if not self._proposals_to_send():
            return
        q = self.proposals
        if q.target == self.id:
            batch = q.take(_UNBOUNDED)
            self.superseded_by = self.sessions.superseding(q.session) or self.superseded_by
            self._accept(q.session, batch)
            q.on_ack(q.sent, 0)
            return
        # One batch per round trip: a batch sent before the previous one is answered could
        # arrive first, be refused as a gap, and make every answer trigger a resend.
        assert q.target is not None
        batch = q.take(self.cfg.max_msg_entries)
        self._msgs.append(Message(MsgType.PROPOSE, self.id, q.target, entries=batch))

    def _accept(self, client: str, entries: tuple[Entry, ...]) -> tuple[int, int]:
        """Leader: append what comes next of `client`'s proposals; (top seq, gap)."""
        new, top, gap = self.sessions.accept(client, entries, self.term, self.log.last_index)
        self._append(new)
        return top, gap

    def _handle_propose(self, m: Message) -> None:
        client = m.entries[0].client if m.entries else ""
        if not client or any(e.client != client for e in m.entries):
            return
        newer = self.sessions.superseding(client)
        if newer:  # refused, and told so: it would otherwise retry forever in silence
            self._msgs.append(Message(MsgType.PROPOSE_RESP, self.id, m.src, term=self.term,
                                      reject=True, context=client, hint_term=newer))
            return
        top, gap = self._accept(client, m.entries)
        self._msgs.append(Message(MsgType.PROPOSE_RESP, self.id, m.src, term=self.term,
                                  context=client, hint=top, index=gap))

    def _redirect_proposals(self, m: Message) -> None:
        """Not the leader: say so, naming the leader this node knows (if any)."""
        client = m.entries[0].client if m.entries else ""
        self._msgs.append(Message(MsgType.PROPOSE_RESP, self.id, m.src, term=self.term,
                                  reject=True, context=client, payload=self.leader))

    def _handle_propose_resp(self, m: Message) -> None:
        q = self.proposals
        if m.context != q.session or m.src != q.target:
            return
        if m.term < self.term:
            # From an older term: what that leader held may since have been lost.
            return
        if m.hint >= q.next_seq:  # it cannot hold what this node never proposed
            self.malformed += 1
            return
        if m.reject and m.hint_term:
            mine = owner_of(q.session)
            if mine is not None and m.hint_term > mine[1]:
                self.superseded_by = m.hint_term
            return
        if m.reject:
            redirect = m.payload
            if redirect in self.voters and redirect not in (m.src, self.id):
                q.retarget(redirect)
            return  # else the resend timer retries: one reject per batch must not resend all
        q.on_ack(m.hint, m.index)

    # ---- helpers ----------------------------------------------------------------------

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def _send(self, kind: MsgType, to: str, index: int = 0, reject: bool = False,
              hint: int = 0, hint_term: int = 0, context: str = "") -> None:
        self._msgs.append(Message(kind, self.id, to, term=self.term, index=index,
                                  reject=reject, hint=hint, hint_term=hint_term,
                                  context=context))


def _well_formed(m: Message) -> bool:
    """What every correct sender's message satisfies, checked before anything else."""
    if m.type in _ROUND_CARRIERS and m.context and not _is_round(m.context):
        return False
    if m.type is MsgType.APPEND:
        if m.log_term > m.term:
            return False
        index, term = m.index, m.log_term
        for e in m.entries:  # contiguous, after prevLogIndex, terms in order, none ahead
            index += 1
            if e.index != index or not term <= e.term <= m.term:
                return False
            term = e.term
        return True
    if m.type is MsgType.APPEND_RESP:
        return not m.reject or (m.hint <= m.index and m.hint_term <= m.term)
    if m.type in _VOTE_REQUESTS:
        return m.log_term <= m.term
    if m.type is MsgType.PROPOSE_RESP:
        return m.index <= m.hint + 1  # the seq wanted next follows what is held
    if m.type in _READS:
        return bool(m.context)
    if m.type is MsgType.SNAPSHOT:
        return m.index >= 1 and m.log_term <= m.term and m.hint <= m.hint_term
    return True


@dataclass(slots=True)
class _Incoming:
    """A snapshot arriving in chunks: its bytes so far, and what its first chunk said."""

    index: int
    term: int
    size: int
    voters: tuple[str, ...]
    sessions: tuple[tuple[str, int], ...]
    data: bytearray = field(default_factory=bytearray)


def _chunk(m: Message) -> tuple[bytes, tuple[str, ...], tuple[tuple[str, int], ...]] | None:
    """A SNAPSHOT message's bytes, voters and sessions (those two from the first chunk
    only); None if its payload is not what a leader sends."""
    p = m.payload
    if not isinstance(p, dict) or not isinstance(p.get("data"), str):
        return None
    try:
        data = base64.b64decode(p["data"], validate=True)
    except (binascii.Error, ValueError):
        return None
    if m.hint:
        return data, (), ()
    voters, sessions = p.get("voters"), p.get("sessions")
    if not (isinstance(voters, list) and all(type(v) is str for v in voters)
            and isinstance(sessions, list)
            and all(isinstance(s, list) and len(s) == 2 and type(s[0]) is str
                    and type(s[1]) is int and s[1] > 0 for s in sessions)):
        return None
    return data, tuple(voters), tuple((s[0], s[1]) for s in sessions)


def _is_round(context: str) -> bool:
    return len(context) <= 20 and context.isascii() and context.isdigit()
