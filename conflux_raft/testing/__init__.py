"""Testing helpers for Raft on the core alone: a seeded simulator with faults and safety
checks, a small in-memory cluster for step-by-step tests, and a linearizability checker."""

from ._checks import SafetyChecker, SafetyViolation
from ._cluster import Cluster
from ._host import Host, ProtocolViolation
from ._linear import AppendLog, Model, Op, Register, is_linearizable, linearize
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
    "Register",
    "SafetyChecker",
    "SafetyViolation",
    "SimConfig",
    "SimResult",
    "Simulation",
    "SimulationFailure",
    "is_linearizable",
    "linearize",
    "run_seed",
]
