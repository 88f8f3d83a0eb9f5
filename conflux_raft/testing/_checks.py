"""Raft's safety properties (paper §5, Figure 3), checked after every step of a node.

The checks are incremental: each step changes one node, so only what changed on that
node is compared against what every node has shown so far, over the whole history.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core import Entry, Role
from ._host import Host, ProtocolViolation


class SafetyViolation(AssertionError):
    """A Raft safety property does not hold."""


class _View:
    """What the checker last saw of one node."""

    __slots__ = ("applied", "commit", "incarnation", "leader", "log", "proposals", "term",
                 "vote")

    def __init__(self) -> None:
        self.log: list[Entry] = []
        self.proposals: dict[tuple[str, int], int] = {}  # (client, seq) -> index in log
        self.term = 0
        self.vote: str | None = None
        self.commit = 0
        self.leader = False  # a leader (in `term`) when last seen
        self.incarnation = 0
        self.applied = 0


def _first_difference(old: list[Entry], new: list[Entry]) -> int:
    n = len(old)
    if len(new) >= n and new[:n] == old:
        return n
    i = 0
    for a, b in zip(old, new, strict=False):
        if a != b:
            break
        i += 1
    return i


class SafetyChecker:
    """Election Safety, Leader Append-Only, Log Matching, Leader Completeness and State
    Machine Safety; also the durability the Ready protocol promises, and proposal ids
    (never twice in a log, in order)."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}  # term -> the one leader of that term
        # (index, term) -> the entry there, and the term of the entry before it
        self._entries: dict[tuple[int, int], tuple[Entry, int]] = {}
        self.committed: list[tuple[Entry, int]] = []  # by index-1: entry, term it was committed in
        self.applied: list[Entry] = []  # by index-1: what every state machine applies there
        self._views: dict[str, _View] = {}

    def crashed(self, node: str) -> None:
        view = self._views.get(node)
        if view is not None:
            view.leader = False

    def observe(self, host: Host) -> None:
        """Check the node after one step (and the Ready batches that followed it)."""
        core = host.live()
        v = self._views.setdefault(host.id, _View())
        log = host.full_log()
        name = f"node {host.id} (term {core.term}, {core.role.value})"
        if host.incarnation != v.incarnation:
            v.incarnation, v.leader, v.applied = host.incarnation, False, 0
            v.commit = min(v.commit, core.log.commit)  # only term, vote and log must survive
        self._check_durable(host, log, name)
        if core.term < v.term:
            raise SafetyViolation(f"{name}: term went back from {v.term}")
        if core.term == v.term and v.vote is not None and core.vote != v.vote:
            raise SafetyViolation(f"{name}: voted for {v.vote} then {core.vote} in one term")
        leader = core.role is Role.LEADER
        start = _first_difference(v.log, log)
        if leader and v.leader and v.term == core.term and start < len(v.log):
            raise SafetyViolation(
                f"Leader Append-Only: {name} changed its own entry {start + 1}: "
                f"{v.log[start]} -> {log[start] if start < len(log) else 'deleted'}"
            )
        for i in range(start, len(log)):
            self._check_entry(log, i, core.term, name)
        self._check_sessions(v, start, log, name)
        if leader:
            fresh = not (v.leader and v.term == core.term)
            self._check_leader(host.id, core.term, log, fresh)
        commit = core.log.commit
        if commit < v.commit:
            raise SafetyViolation(f"{name}: commit went back from {v.commit} to {commit}")
        if commit > len(log):
            raise SafetyViolation(f"{name}: commit {commit} beyond its last index {len(log)}")
        for i in range(v.commit, commit):
            self._check_commit(log[i], core.term, name)
        self._check_applied(host, v.applied, commit, name)
        v.log, v.term, v.vote, v.commit, v.leader = log, core.term, core.vote, commit, leader
        v.applied = len(host.applied)

    # ---- the properties ------------------------------------------------------------

    def _check_durable(self, host: Host, log: list[Entry], name: str) -> None:
        core = host.live()
        hs = host.storage.hard_state
        if (hs.term, hs.vote) != (core.term, core.vote) or hs.commit > core.log.commit:
            raise ProtocolViolation(f"{name}: persisted {hs} differs from the core's state")
        stored = host.storage
        lo, hi = core.log.offset + 1, stored.last_index() + 1  # stored may reach back further
        if stored.first_index() > lo or stored.entries(lo, hi) != core.log.entries_from(1):
            raise ProtocolViolation(f"{name}: the persisted log differs from the core's log")

    def _check_entry(self, log: Sequence[Entry], i: int, term: int, name: str) -> None:
        e = log[i]
        prev_term = log[i - 1].term if i else 0
        if e.index != i + 1:
            raise SafetyViolation(f"{name}: entry at position {i + 1} has index {e.index}")
        if not prev_term <= e.term <= term:
            raise SafetyViolation(f"{name}: entry {e} out of term order (prev term {prev_term})")
        seen = self._entries.setdefault((e.index, e.term), (e, prev_term))
        if seen != (e, prev_term):
            raise SafetyViolation(
                f"Log Matching: {name} holds {e} after term {prev_term}, but another log held "
                f"{seen[0]} after term {seen[1]}"
            )

    def _check_sessions(self, v: _View, start: int, log: Sequence[Entry], name: str) -> None:
        """Proposal ids: in any log, a session's seqs run 1, 2, 3, ... each once."""
        for e in v.log[start:]:
            if e.client:
                del v.proposals[(e.client, e.seq)]
        for e in log[start:]:
            if not e.client:
                continue
            if (e.client, e.seq) in v.proposals:
                raise SafetyViolation(f"{name} holds ({e.client}, {e.seq}) at "
                                      f"{v.proposals[(e.client, e.seq)]} and {e.index}")
            if e.seq != 1 and (e.client, e.seq - 1) not in v.proposals:
                raise SafetyViolation(f"{name} holds {e} without seq {e.seq - 1} before it")
            v.proposals[(e.client, e.seq)] = e.index

    def _check_leader(self, node: str, term: int, log: Sequence[Entry], fresh: bool) -> None:
        other = self.leaders.setdefault(term, node)
        if other != node:
            raise SafetyViolation(f"Election Safety: {other} and {node} both lead term {term}")
        if fresh:
            for entry, committed_in in self.committed:
                if committed_in < term:
                    self._require(node, term, log, entry)

    def _require(self, node: str, term: int, log: Sequence[Entry], entry: Entry) -> None:
        i = entry.index - 1
        if i >= len(log) or log[i] != entry:
            raise SafetyViolation(
                f"Leader Completeness: {node}, leader of term {term}, lacks committed {entry}"
            )

    def _check_commit(self, entry: Entry, term: int, name: str) -> None:
        i = entry.index - 1
        if i < len(self.committed):
            if self.committed[i][0] != entry:
                raise SafetyViolation(
                    f"{name} commits {entry}, but {self.committed[i][0]} was committed there"
                )
            return
        self.committed.append((entry, term))
        for node, v in self._views.items():
            if v.leader and v.term > term:
                self._require(node, v.term, v.log, entry)

    def _check_applied(self, host: Host, start: int, commit: int, name: str) -> None:
        if len(host.applied) > commit:
            raise SafetyViolation(f"{name} applied {len(host.applied)} entries, commit {commit}")
        for i in range(start, len(host.applied)):
            e = host.applied[i]
            if i < len(self.applied):
                if self.applied[i] != e:
                    raise SafetyViolation(
                        f"State Machine Safety: {name} applies {e}, another node applied "
                        f"{self.applied[i]}"
                    )
            else:
                self.applied.append(e)
            if self.committed[i][0] != e:
                raise SafetyViolation(f"{name} applies {e}, not the committed entry")
