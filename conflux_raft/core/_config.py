"""The parameters of one core, checked before it starts."""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ConfigError


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Parameters of one core. Times are in ticks; sizes in entries or bytes."""

    id: str
    voters: tuple[str, ...]
    session: str
    election_ticks: tuple[int, int] = (10, 20)
    heartbeat_ticks: int = 2
    max_msg_entries: int = 512
    max_msg_bytes: int = 1 << 20
    max_inflight: int = 64
    max_inflight_bytes: int = 1 << 25
    max_snapshot_chunk: int = 1 << 20  # bytes of a snapshot per SNAPSHOT message
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
        if min(self.max_msg_entries, self.max_msg_bytes, self.max_inflight,
               self.max_inflight_bytes, self.max_snapshot_chunk) < 1:
            raise ConfigError("max_msg_entries, max_msg_bytes, max_inflight, "
                              "max_inflight_bytes and max_snapshot_chunk must be >= 1")
