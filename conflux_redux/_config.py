"""The store's configuration: the seed's options in snake_case, checked once, eagerly."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from conflux_raft import ConfigError, parse_options

Method = Callable[..., Any]


@dataclass(frozen=True)
class ConfluxConfig:
    """Options of one Conflux store (see API.md). Times are seconds.

    Building one checks every option and raises `ConfigError` (a `ValueError`) naming
    the option that is wrong.
    """

    id: str
    cluster_size: int | None = None
    members: Sequence[str] | None = None
    channel: Mapping[str, Any] | None = None
    methods: Mapping[str, Method] = field(default_factory=dict)
    election_timeout: Any = (0.3, 0.5)
    heartbeat_interval: float = 0.05
    storage: Mapping[str, Any] | None = None
    secret: str | bytes | None = None
    max_pending: int = 10_000
    snapshot_every: int | None = 10_000  # None: never compact

    def __post_init__(self) -> None:
        methods = self.methods
        if methods is None:
            methods = {}
        if not isinstance(methods, Mapping):
            raise ConfigError("methods: a dict of name -> function(state, *args)")
        for name, fn in methods.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"methods: names must be non-empty strings, got {name!r}")
            if not callable(fn):
                raise ConfigError(f"methods.{name}: must be callable")
        object.__setattr__(self, "methods", dict(methods))
        if self.members is not None and not isinstance(self.members, (str, bytes)):
            try:
                object.__setattr__(self, "members", tuple(self.members))
            except TypeError:
                raise ConfigError(
                    "members: a list of non-empty string ids is required") from None
        parse_options(**self.node_options())  # raises ConfigError naming the option

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> ConfluxConfig:
        """Build from a dict with the same keys; an unknown key raises ConfigError."""
        if not isinstance(cfg, Mapping):
            raise TypeError(
                f"config: a dict or a ConfluxConfig is required, not {type(cfg).__name__}")
        known = {f.name for f in fields(cls)}
        for key in cfg:
            if key not in known:
                hint = " (the reducer is given to create_store)" if key == "reduce" else ""
                raise ConfigError(
                    f"{key}: unknown option{hint}; known options: {sorted(known)}")
        if "id" not in cfg:
            raise ConfigError("id: a non-empty string is required")
        return cls(**cfg)

    def node_options(self) -> dict[str, Any]:
        """The keyword arguments of `conflux_raft.RaftNode` (without rpc and autostart)."""
        return {
            "id": self.id,
            "cluster_size": self.cluster_size,
            "members": self.members,
            "channel": self.channel,
            "election_timeout": self.election_timeout,
            "heartbeat_interval": self.heartbeat_interval,
            "storage": self.storage,
            "secret": self.secret,
            "max_pending": self.max_pending,
            **({} if self.snapshot_every is None else {"snapshot_every": self.snapshot_every}),
        }


def to_config(cfg: ConfluxConfig | Mapping[str, Any]) -> ConfluxConfig:
    if isinstance(cfg, ConfluxConfig):
        return cfg
    return ConfluxConfig.from_dict(cfg)
