"""The simulator on a fixed set of seeds, proof that it catches broken cores, and the
other testing helpers: the in-memory Cluster, the safety checker, the linearizability
checker and the command line."""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from test_paper import figure_8

from conflux_raft import Entry, EntryKind, Message, MsgType, RaftCore, Role
from conflux_raft.core import RaftLog, ReadState, SessionTable
from conflux_raft.testing import (
    AppendLog,
    Cluster,
    Op,
    Register,
    SafetyChecker,
    SafetyViolation,
    SimConfig,
    Simulation,
    SimulationFailure,
    _cluster,
    is_linearizable,
    linearize,
    run_seed,
)
from conflux_raft.testing.simulate import main, run

# The CI budget: seeds with the faults drawn per seed (a storm in one of four), and seeds
# that are all storms, which hit every new leader as it starts.
MIXED = range(0, 400)
STORMS = range(0, 200)
MIXED_CONFIG = SimConfig()
STORM_CONFIG = SimConfig(storm=True)


def chunks(seeds: range, size: int = 40) -> list[range]:
    return [range(lo, min(lo + size, seeds.stop)) for lo in range(seeds.start, seeds.stop, size)]


@pytest.mark.parametrize("seeds", chunks(MIXED), ids=str)
def test_the_ci_seeds_find_no_violation(seeds: range) -> None:
    for seed in seeds:
        run_seed(seed, MIXED_CONFIG)


@pytest.mark.parametrize("seeds", chunks(STORMS), ids=str)
def test_the_ci_storm_seeds_find_no_violation(seeds: range) -> None:
    for seed in seeds:
        run_seed(seed, STORM_CONFIG)


@pytest.mark.skipif(not os.environ.get("CONFLUX_SOAK"), reason="a soak: set CONFLUX_SOAK=1")
@pytest.mark.slow
def test_soak() -> None:
    assert run(range(10_000, 12_000), MIXED_CONFIG, jobs=os.cpu_count() or 1) == 0


def test_a_seed_replays_exactly() -> None:
    def fingerprint(seed: int) -> tuple[Any, ...]:
        sim = Simulation(seed)
        result = sim.run()
        logs = tuple(tuple(h.live().log.entries_from(1)) for h in sim.hosts.values())
        return result, logs, tuple(sorted(sim.acks.items()))

    for seed in (3, 11, 40):
        assert fingerprint(seed) == fingerprint(seed)


def test_runs_do_not_depend_on_hash_randomization() -> None:
    def output(hash_seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-m", "conflux_raft.testing.simulate", "--seeds", "4"],
            capture_output=True, text=True, env=env, timeout=120, check=True)
        return done.stdout.split("time:")[0]

    assert output("1") == output("2")


# ---- broken cores: a check that cannot fail is no check -----------------------------------


class QuorumOffByOne(RaftCore):
    """Counts n // 2 as a majority."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.voters.quorum = len(self.cfg.voters) // 2


class CommitOldTerms(RaftCore):
    """Commits by counting replicas whatever the entry's term (the trap of §5.4.2)."""

    def _maybe_commit(self) -> None:
        match = {self.id: self.log.last_index, **self.progress()}
        self.log.commit = max(self.log.commit, self.voters.committed_index(match))


class _TrustingLog(RaftLog):
    __slots__ = ()

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        return True


class VoteWithoutLogCheck(RaftCore):
    """Grants votes without the election restriction of §5.4.1."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log.__class__ = _TrustingLog


class TruncateAtLastConflict(RaftCore):
    """On an append, deletes from the last conflicting entry instead of the first (§5.3)."""

    def _handle_append(self, m: Message) -> None:
        log = self.log
        clash = [i for i, e in enumerate(m.entries) if log.term_at(e.index) not in (None, e.term)]
        if len(clash) > 1 and log.matches(m.index, m.log_term):
            prev = m.entries[clash[-1]].index - 1  # as if the earlier clashes matched
            m = replace(m, index=prev, log_term=log.term_at(prev) or 0,
                        entries=m.entries[clash[-1]:])
        super()._handle_append(m)


class _ForgetfulSessions(SessionTable):
    """Remembers each session's highest seq, but appends whatever it is given."""

    def accept(self, client: str, entries: Sequence[Entry], term: int,
               last_index: int) -> tuple[list[Entry], int, int]:
        top = max([self._top.get(client, 0), *(e.seq for e in entries)])
        self._top[client] = top
        new = [Entry(term, last_index + 1 + i, e.data, EntryKind.NORMAL, client, e.seq)
               for i, e in enumerate(entries)]
        return new, top, 0


class NoDedup(RaftCore):
    """Appends every proposal it is sent, retries included (dissertation §6.3)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions = _ForgetfulSessions()


class UnconfirmedReads(RaftCore):
    """Serves reads from its own commit index at once: a leader that was cut off or paused
    answers from a leadership it cannot prove (ReadIndex without the quorum round)."""

    def _leader_read(self, context: str, asker: str) -> None:
        if asker == self.id:
            self._read_states.append(ReadState(context, self.log.commit))
        else:
            self._msgs.append(Message(MsgType.READ_INDEX_RESP, self.id, asker,
                                      term=self.term, index=self.log.commit,
                                      context=context))


class ReadsBeforeTheNoop(RaftCore):
    """Confirms reads, but at the commit index a new leader inherited, before an entry
    of its own term committed (§6.4: it may not know what is committed yet)."""

    def _leader_read(self, context: str, asker: str) -> None:
        self._reads.append((self._read_round + 1, self.log.commit, context, asker))
        self._round_wanted = True


class SnapshotPastItsData(RaftCore):
    """Sends snapshots that claim one entry more than their data holds."""

    def _send_chunk(self, peer: str, pr: Any) -> None:
        super()._send_chunk(peer, pr)
        m = self._msgs[-1]
        claimed = m.index + 1
        term = self.log.term_at(claimed)
        if term is not None:
            self._msgs[-1] = replace(m, index=claimed, log_term=term)


class SnapshotWithoutSessions(RaftCore):
    """Leaves the de-duplication sessions out of its snapshots."""

    def sessions_at(self, index: int) -> tuple[tuple[str, int], ...]:
        return ()


BROKEN = [
    (QuorumOffByOne, MIXED_CONFIG, MIXED),
    (VoteWithoutLogCheck, MIXED_CONFIG, MIXED),
    (TruncateAtLastConflict, MIXED_CONFIG, MIXED),
    (CommitOldTerms, STORM_CONFIG, STORMS),
    (NoDedup, MIXED_CONFIG, MIXED),
    (UnconfirmedReads, MIXED_CONFIG, MIXED),
    (ReadsBeforeTheNoop, MIXED_CONFIG, MIXED),
    (SnapshotPastItsData, MIXED_CONFIG, MIXED),
    (SnapshotWithoutSessions, MIXED_CONFIG, MIXED),
]


@pytest.mark.parametrize(("core_class", "config", "seeds"), BROKEN,
                         ids=[b[0].__name__ for b in BROKEN])
def test_a_broken_core_is_caught_within_the_ci_seeds(
    core_class: type[RaftCore], config: SimConfig, seeds: range
) -> None:
    for seed in seeds:
        try:
            run_seed(seed, config, core_class)
        except SimulationFailure as failure:
            assert failure.seed == seed
            assert str(failure).startswith(f"seed {seed}: ")
            assert f"--seed {seed}" in str(failure)
            with pytest.raises(SimulationFailure) as again:  # and the seed replays it
                run_seed(seed, config, core_class)
            assert str(again.value) == str(failure)
            return
    pytest.fail(f"{core_class.__name__} passed {len(seeds)} seeds")


def test_figure_8_catches_commits_counted_over_an_old_term() -> None:
    with pytest.raises(SafetyViolation, match="Leader Completeness"):
        figure_8(CommitOldTerms)


# ---- the command line --------------------------------------------------------------------


def test_the_command_reports_seeds_violations_and_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3", "--start", "5"]) == 0
    out = capsys.readouterr().out
    assert "seeds: 3 (5..7)" in out and "violations: 0" in out and "time:" in out
    assert main(["--seed", "9", "--nodes", "4", "--storm", "always"]) == 0
    assert "seeds: 1 (9..9)" in capsys.readouterr().out


def test_the_command_fails_on_a_violation(capsys: pytest.CaptureFixture[str]) -> None:
    failed = run(range(0, 4), MIXED_CONFIG, core_class=QuorumOffByOne)
    out = capsys.readouterr().out
    assert failed > 0 and f"violations: {failed}" in out
    assert out.count("replay: python -m conflux_raft.testing.simulate --seed ") == failed


def test_the_command_in_two_processes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conflux_raft.testing.simulate", "--seeds", "6", "--jobs", "2"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "violations: 0" in done.stdout


# ---- the safety checker on hand-made states ----------------------------------------------


def observed(c: Cluster) -> SafetyChecker:
    checker = SafetyChecker()
    for h in c.hosts.values():
        checker.observe(h)
    return checker


def test_the_checker_sees_two_leaders_in_one_term() -> None:
    c = Cluster(3)
    c.elect("n1")
    checker = observed(c)
    c["n2"].role = Role.LEADER
    with pytest.raises(SafetyViolation, match="Election Safety"):
        checker.observe(c.hosts["n2"])


def test_the_checker_sees_two_logs_that_disagree_before_a_matching_entry() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"1")
    c.run(2)
    checker = observed(c)
    c.crash("n3")
    entries = c.hosts["n3"].storage.load()[1]
    c.restart("n3", entries=[Entry(1, 1, b"forged"), *entries[1:]])
    with pytest.raises(SafetyViolation, match="Log Matching"):
        checker.observe(c.hosts["n3"])


def test_the_checker_sees_a_leader_that_rewrites_its_log() -> None:
    c = Cluster(3)
    c.elect("n1")
    c.propose("n1", b"1")
    checker = observed(c)
    leader = c["n1"]
    leader.log.truncate_after(1)
    leader.log.append([Entry(1, 2, b"2")])
    c.hosts["n1"].storage.save(None, [Entry(1, 2, b"2")])
    with pytest.raises(SafetyViolation, match="Leader Append-Only"):
        checker.observe(c.hosts["n1"])


# ---- the Cluster helper ------------------------------------------------------------------


def test_cluster_doctest() -> None:
    assert doctest.testmod(_cluster).failed == 0


def test_cluster_faults() -> None:
    c = Cluster(["a", "b", "c"])
    c.elect("a")
    c.cut("a", "b")
    c.propose("a", b"1")
    c.run(2)
    assert (c.applied("b"), c.applied("c")) == ([], [b"1"])
    c.recover()
    c.ignore(MsgType.APPEND)
    c.propose("a", b"2")
    c.stabilize()
    assert c["a"].log.commit == 2  # nothing new reached anyone
    c.recover()
    c.drop("a", "c", 0.5)
    c.run(40)
    assert [c.applied(i) for i in c.ids] == [[b"1", b"2"]] * 3
    c.recover()
    c.crash("a")
    c.run(40)
    assert c.leader() in ("b", "c")
    c.restart("a")
    c.run(10)
    assert c.applied("a") == [b"1", b"2"]
    assert c["a"].role is Role.FOLLOWER and c["a"].cfg.session == "a.2"


def test_cluster_take_and_step() -> None:
    c = Cluster(3)
    while c["n1"].role is Role.FOLLOWER:
        c.tick("n1")
    assert c["n1"].role is Role.PRE_CANDIDATE
    requests = c.take(MsgType.PRE_VOTE)
    assert sorted(m.dst for m in requests) == ["n2", "n3"]
    c.step(requests[0])
    assert [m.type for m in c.take()] == [MsgType.PRE_VOTE_RESP]


def test_cluster_elect_says_when_it_cannot() -> None:
    c = Cluster(3)
    c.isolate("n1")
    with pytest.raises(AssertionError, match="did not win"):
        c.elect("n1")


# ---- linearizability -------------------------------------------------------------------


def test_register_histories() -> None:
    ok = [Op("write", 1, start=0, end=10), Op("read", result=None, start=2, end=3),
          Op("read", result=1, start=4, end=5)]
    assert is_linearizable(ok, Register())
    stale = [Op("write", 1, start=0, end=1), Op("read", result=None, start=2, end=3)]
    assert not is_linearizable(stale, Register())
    back = [Op("write", 1, start=0, end=10), Op("read", result=1, start=2, end=3),
            Op("read", result=None, start=4, end=5)]
    assert not is_linearizable(back, Register())
    cas = [Op("cas", (None, 1), True, 0, 1), Op("cas", (None, 2), True, 0, 1)]
    assert not is_linearizable(cas, Register())


def test_an_operation_that_never_returned_may_or_may_not_have_happened() -> None:
    lost = [Op("write", 1, start=0, end=1), Op("write", 2, start=2),
            Op("read", result=1, start=3, end=4), Op("read", result=2, start=5, end=6)]
    order = linearize(lost, Register())
    assert order is not None and [op.kind for op in order] == ["write", "read", "write", "read"]
    assert is_linearizable(lost[:3], Register())


def test_append_log_histories() -> None:
    overlap = [Op("append", "a", start=0, end=5), Op("append", "b", start=1, end=3),
               Op("read", result=["b", "a"], start=6, end=7)]
    assert is_linearizable(overlap, AppendLog())
    ordered = [Op("append", "a", start=0, end=1), Op("append", "b", start=2, end=3),
               Op("read", result=["b", "a"], start=6, end=7)]
    assert not is_linearizable(ordered, AppendLog())


def test_proposals_through_a_cluster_are_linearizable() -> None:
    """Appends return once their node applied them; reads see what n1 applied."""
    c = Cluster(3)
    c.elect("n1")
    calls: dict[tuple[str, int], Op] = {}
    reads: list[Op] = []

    def observe(t: float) -> None:
        for h in c.hosts.values():
            for e in h.applied:
                op = calls.get((e.client, e.seq))
                if op is not None and op.end is None and op.client == h.id:
                    calls[(e.client, e.seq)] = replace(op, end=t)
        reads.append(Op("read", result=[int(d) for d in c.applied("n1")], start=t, end=t))

    for t in range(30):
        node = c.ids[t % 3]
        seq = c.propose(node, b"%d" % t)
        calls[(c[node].cfg.session, seq)] = Op("append", t, start=t, client=node)
        if t % 4 == 0:
            c.run(1)
        observe(t + 0.5)
    c.run(4)
    observe(100)
    assert len(reads[-1].result) == 30
    assert is_linearizable([*calls.values(), *reads], AppendLog())
    swapped = [*reads[-1].result[1::-1], *reads[-1].result[2:]]
    assert not is_linearizable([*calls.values(), *reads[:-1], replace(reads[-1], result=swapped)],
                               AppendLog())
