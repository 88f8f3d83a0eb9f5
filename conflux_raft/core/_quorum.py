"""Majority arithmetic, in one place: commit indexes, elections and check-quorum all ask
here (etcd's quorum package), so that joint consensus has one place to change."""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping


class VoteResult(enum.Enum):
    """The outcome of an election so far."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


class MajorityConfig:
    """A set of voters; a quorum is more than half of them (a 1-voter set is its own)."""

    __slots__ = ("quorum", "voters")

    def __init__(self, voters: Iterable[str]) -> None:
        self.voters = tuple(voters)
        self.quorum = len(self.voters) // 2 + 1

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.voters

    def committed_index(self, match: Mapping[str, int]) -> int:
        """The highest index that a quorum of voters holds, given each voter's match."""
        acked = sorted((match.get(v, 0) for v in self.voters), reverse=True)
        return acked[self.quorum - 1]

    def vote_result(self, votes: Mapping[str, bool]) -> VoteResult:
        """WON once a quorum granted, LOST once a quorum refused, else PENDING."""
        granted = sum(1 for v in self.voters if votes.get(v) is True)
        if granted >= self.quorum:
            return VoteResult.WON
        refused = sum(1 for v in self.voters if votes.get(v) is False)
        return VoteResult.LOST if refused >= self.quorum else VoteResult.PENDING

    def is_active(self, active: Collection[str]) -> bool:
        """Whether the voters heard from (`active`) are a quorum (check-quorum)."""
        return sum(1 for v in self.voters if v in active) >= self.quorum
