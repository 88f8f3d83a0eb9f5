"""Testing helpers for Raft on the core alone: a seeded simulator with faults and safety
checks, a small in-memory cluster for step-by-step tests, a linearizability checker, a
private redis-server for tests that need a real one, and a TCP proxy that cuts, delays
and heals a link to it."""

from ._checks import SafetyChecker, SafetyViolation
from ._cluster import Cluster
from ._host import Host, ProtocolViolation
from ._linear import AppendLog, Model, Op, Register, is_linearizable, linearize
from ._proxy import TcpProxy
from ._redis_server import RedisServer, answers_ping, find_redis_server, free_port
from ._sim import (
    LivenessViolation,
    SimConfig,
    SimResult,
    Simulation,
    SimulationFailure,
    run_seed,
)

__all__ = [
    "AppendLog",
    "Cluster",
    "Host",
    "LivenessViolation",
    "Model",
    "Op",
    "ProtocolViolation",
    "RedisServer",
    "Register",
    "SafetyChecker",
    "SafetyViolation",
    "SimConfig",
    "SimResult",
    "Simulation",
    "SimulationFailure",
    "TcpProxy",
    "answers_ping",
    "find_redis_server",
    "free_port",
    "is_linearizable",
    "linearize",
    "run_seed",
]
