"""A deterministic simulation of a whole cluster of cores, driven by one seed.

Time is counted in moments; every node ticks once per `TICK` moments, at its own phase.
The network delays, reorders, drops and duplicates messages; partitions come and heal;
nodes pause, crash and restart from what they persisted. Clients propose and read at
random nodes. The safety checker runs after every step, and every read is checked to be
linearizable: answered at an index that holds every entry committed before it was asked.
At the end everything heals and the cluster must settle: one leader, every proposal
accounted for, every read answered.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..core import CoreConfig, Message, RaftCore, ReadState, Role
from ._checks import SafetyChecker, SafetyViolation
from ._host import Host

TICK = 4  # moments per tick


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The size of one run; what goes wrong in it is drawn from the seed."""

    nodes: int = 0  # cluster size; 0 draws one from 1 to 5
    ticks: int = 300  # ticks of faults and client load
    settle_ticks: int = 300  # once healed, ticks allowed without progress
    faults: bool = True
    storm: bool | None = None  # None: one seed in four; see _draw_profile
    trace: int = 0  # keep the last `trace` events for the failure message


@dataclass(frozen=True, slots=True)
class SimResult:
    """What one run did."""

    seed: int
    nodes: int
    steps: int
    ticks: int
    leaders: int
    proposals: int
    committed: int
    reads: int
    crashes: int
    partitions: int


class LivenessViolation(AssertionError):
    """After healing, the cluster did not settle, or a proposal went missing."""


class SimulationFailure(AssertionError):
    """A run found a violation; the message names the seed that replays it."""

    def __init__(self, seed: int, config: SimConfig, tick: float, cause: BaseException,
                 trace: list[str]) -> None:
        self.seed = seed
        self.cause = cause
        args = f"--seed {seed}"
        if config.nodes:
            args += f" --nodes {config.nodes}"
        if config.ticks != SimConfig().ticks:
            args += f" --ticks {config.ticks}"
        if config.storm is not None:
            args += f" --storm {'always' if config.storm else 'never'}"
        if not config.faults:
            args += " --no-faults"
        lines = [f"seed {seed}: {type(cause).__name__} at tick {tick:g}: {cause}",
                 f"replay: python -m conflux_raft.testing.simulate {args} --trace 60"]
        if trace:
            lines += ["last events:", *trace]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class _Profile:
    """The faults and settings of one run."""

    storm: bool
    drop: float
    dup: float
    delay: int  # moments, at least 1
    spike: float  # chance of a long delay
    partition_rate: float  # per tick
    crash_rate: float
    pause_rate: float
    outage: int  # longest partition or crash, in ticks
    tear: float  # chance that a step crashes its node between persisting and sending
    depose: float  # chance that a new leader is cut off, or crashes within a few steps
    isolate: float  # share of deposed leaders that are cut off rather than crashed
    propose_rate: float  # per tick
    read_rate: float  # per tick
    snapshot_every: int  # entries applied between a node's snapshots (0: never)
    keep: int  # entries kept behind a snapshot
    core: CoreConfig


def _draw_profile(rng: random.Random, cfg: SimConfig) -> _Profile:
    """Draw the faults of one run. A storm (one seed in four by default) hits every new
    leader, the way logs diverge worst: leaders cut off or failing as they start."""
    c = rng.choice
    storm = cfg.faults and (rng.random() < 0.25 if cfg.storm is None else cfg.storm)
    nodes = cfg.nodes or (3 if storm else c((1, 2, 3, 3, 3, 4, 5, 5, 5)))
    lo = c((5, 10, 10))
    core = CoreConfig(
        id="-",
        voters=tuple(f"n{i}" for i in range(1, nodes + 1)),
        session="-",
        election_ticks=(lo, lo * 2),
        heartbeat_ticks=c((1, 2, 2, 3)),
        max_msg_entries=c((1, 2) if storm else (1, 2, 3, 8, 64)),
        max_msg_bytes=c((40, 100, 1 << 20, 1 << 20)),
        max_inflight=c((1, 2, 4, 64)),
        max_snapshot_chunk=c((64, 512, 1 << 20)),
        pre_vote=c((True, True, False)),
        check_quorum=c((True, True, False)),
    )
    f = cfg.faults
    return _Profile(
        storm=storm,
        drop=c((0.0, 0.01, 0.05, 0.2)) if f else 0.0,
        dup=c((0.0, 0.02, 0.1)) if f else 0.0,
        delay=c((1, 2, 4, 8, 12)),
        spike=c((0.0, 0.01, 0.05)) if f else 0.0,
        partition_rate=(0.15 if storm else c((0.0, 0.01, 0.03, 0.08))) if f else 0.0,
        crash_rate=(0.0 if storm else c((0.0, 0.01, 0.03, 0.06, 0.15))) if f else 0.0,
        pause_rate=c((0.0, 0.01, 0.03)) if f else 0.0,
        outage=c((10, 30, 60)),
        tear=c((0.0, 0.0005, 0.002)) if f else 0.0,
        depose=(0.9 if storm else c((0.0, 0.0, 0.1, 0.3))) if f else 0.0,
        isolate=0.8 if storm else 0.5,
        propose_rate=0.3 if storm else c((0.1, 0.3, 1.0)),
        read_rate=c((0.1, 0.3, 1.0)),
        snapshot_every=c((0, 0, 3, 10, 30)),
        keep=c((0, 2, 10)),
        core=core,
    )


class Simulation:
    """One seeded run. `run()` returns a SimResult or raises SimulationFailure."""

    def __init__(self, seed: int, config: SimConfig = SimConfig(),
                 core_class: type[RaftCore] = RaftCore) -> None:
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.profile = p = _draw_profile(self.rng, config)
        self.ids = list(p.core.voters)
        self.checker = SafetyChecker()
        self.hosts = {
            i: Host(replace(p.core, id=i), self._node_rng(i, 1), core_class,
                    p.snapshot_every, p.keep)
            for i in self.ids
        }
        self.now = 0
        self.steps = 0
        self._drop, self._dup, self._spike = p.drop, p.dup, p.spike
        self._queue: list[tuple[int, float, int, Message]] = []
        self._sent = 0
        self._phase = {i: self.rng.randrange(TICK) for i in self.ids}
        self._group = dict.fromkeys(self.ids, 0)
        self._blocked: dict[tuple[str, str], bool] = {}
        self._heal_at = -1
        self._down_until: dict[str, int] = {}
        self._paused_until = dict.fromkeys(self.ids, 0)
        self._acks_seen = dict.fromkeys(self.ids, 0)
        self._chaos_on = True
        self._isolated: dict[str, int] = {}  # node -> cut off from all until then
        self._doomed: dict[str, int] = {}  # node -> steps left before it crashes mid-batch
        self.proposals: dict[tuple[str, int], tuple[bytes, int]] = {}  # -> data, moment
        self.acks: dict[tuple[str, int], int] = {}  # -> moment seen committed by its proposer
        # Reads not yet answered: context -> [node, highest index committed anywhere when
        # it was asked, moment last asked]. A driver asks again when no answer comes.
        self.reads: dict[str, list[int | str]] = {}
        self.reads_asked = self.reads_served = 0
        self._reads_seen = dict.fromkeys(self.ids, 0)
        self.crashes = self.partitions = 0
        self._trace: deque[str] | None = deque(maxlen=config.trace) if config.trace else None

    # ---- the run ------------------------------------------------------------------

    def run(self) -> SimResult:
        try:
            for h in self.hosts.values():
                self._step(h, "start", lambda c: None)
            for _ in range(self.config.ticks * TICK):
                self._moment(chaos=True)
            self._settle()
            committed = self._final_checks()
        except Exception as exc:
            raise SimulationFailure(self.seed, self.config, self.now / TICK, exc,
                                    list(self._trace or ())) from exc
        return SimResult(
            seed=self.seed, nodes=len(self.ids), steps=self.steps, ticks=self.now // TICK,
            leaders=len(self.checker.leaders), proposals=len(self.proposals),
            committed=committed, reads=self.reads_served, crashes=self.crashes,
            partitions=self.partitions,
        )

    def _settle(self) -> None:
        """Heal everything, then run until quiet: fail if logs and commits stop growing
        for `settle_ticks`, or after ten times that."""
        self._heal_all()
        limit = self.config.settle_ticks * TICK
        start, progress, since, receiving = self.now, -1, self.now, 0
        while not (self.now % TICK == 0 and self._quiet()):
            self._moment(chaos=False)
            cores = [h.live() for h in self.hosts.values()]
            grown = sum(c.log.commit + c.log.last_index for c in cores)
            received = sum(c.incoming_snapshot_bytes for c in cores)  # a transfer moves
            if grown > progress or received > receiving:
                progress, since = max(grown, progress), self.now
            receiving = received
            if self.now - since > limit or self.now - start > 10 * limit:
                raise LivenessViolation(
                    f"not quiet {(self.now - start) // TICK} ticks after healing: "
                    + self._summary()
                )

    def _moment(self, chaos: bool) -> None:
        now = self.now
        while self._queue and self._queue[0][0] <= now:
            self._deliver(heapq.heappop(self._queue)[3])
        phase = now % TICK
        for i in self.ids:
            h = self.hosts[i]
            if self._phase[i] == phase and h.up and self._paused_until[i] <= now:
                self._step(h, "tick", RaftCore.tick)
        if self.reads and phase == 0:
            self._ask_again()
        if chaos:
            self._chaos()
        for i in self.ids:
            if not self.hosts[i].up and self._down_until[i] <= now:
                self._restart(i)
        self.now += 1

    def _step(self, host: Host, what: str | Message,
              action: Callable[[RaftCore], object]) -> None:
        """Run `action` on the host's core, then the Ready protocol and the checks;
        `what` names the step in traces (a message is described only if one is kept)."""
        core = host.live()
        was_leader = core.role is Role.LEADER
        action(core)
        elected = core.role is Role.LEADER and not was_leader
        if self._chaos_on and self._fails_now(host, elected):
            host.tear()
            self._crashed(host.id, f"{_describe(what)}, torn")
            return
        for m in host.flush():
            self._send(m)
        self.steps += 1
        if self._trace is not None:
            self._trace.append(
                f"  t={self.now / TICK:g} {host.id}: {_describe(what)} -> term {core.term} "
                f"{core.role.value} last {core.log.last_index} commit {core.log.commit}"
            )
        self.checker.observe(host)
        acked = host.acked
        for key in acked[self._acks_seen[host.id]:]:
            self.acks[key] = self.now
        self._acks_seen[host.id] = len(acked)
        done = host.reads_done
        for read in done[self._reads_seen[host.id]:]:
            self._answered(host.id, read)
        self._reads_seen[host.id] = len(done)

    def _fails_now(self, host: Host, elected: bool) -> bool:
        """Whether this step crashes its node between persisting and sending."""
        p, r = self.profile, self.rng.random
        if elected and p.depose and r() < p.depose:  # a new leader is cut off, or fails
            if r() < p.isolate:
                self._isolated[host.id] = self.now + self.rng.randint(1, p.outage) * TICK
                self._note(f"{host.id} isolated until t={self._isolated[host.id] / TICK:g}")
            else:
                self._doomed[host.id] = self.rng.randint(0, 6)
        left = self._doomed.pop(host.id, None)
        if left == 0:
            return True
        if left is not None:
            self._doomed[host.id] = left - 1
        return bool(p.tear) and r() < p.tear

    # ---- the network ----------------------------------------------------------------

    def _send(self, m: Message) -> None:
        r = self.rng.random
        if self._drop and r() < self._drop:
            return
        copies = 2 if self._dup and r() < self._dup else 1
        for _ in range(copies):
            delay = self.rng.randint(1, self.profile.delay)
            if self._spike and r() < self._spike:
                delay += self.rng.randint(TICK, 15 * TICK)
            self._push(m, self.now + delay)

    def _push(self, m: Message, due: int) -> None:
        self._sent += 1
        heapq.heappush(self._queue, (due, self.rng.random(), self._sent, m))

    def _deliver(self, m: Message) -> None:
        host = self.hosts.get(m.dst)
        if host is None or not host.up or self._cut(m.src, m.dst):
            return
        if self._paused_until[m.dst] > self.now:
            self._push(m, self._paused_until[m.dst])
            return
        self._step(host, m, lambda c: c.step(m))

    def _cut(self, src: str, dst: str) -> bool:
        return (
            self._group.get(src) != self._group.get(dst)
            or (src, dst) in self._blocked
            or self._isolated.get(src, 0) > self.now
            or self._isolated.get(dst, 0) > self.now
        )

    # ---- faults and load ------------------------------------------------------------

    def _chaos(self) -> None:
        p, r = self.profile, self.rng.random
        if r() < p.propose_rate / TICK:
            self._propose()
        if r() < p.read_rate / TICK:
            self._read()
        if self._heal_at >= 0 and self.now >= self._heal_at:
            self._heal()
        if self._heal_at < 0 and r() < p.partition_rate / TICK:
            self._partition()
        if r() < p.crash_rate / TICK:
            up = [i for i in self.ids if self.hosts[i].up]
            leaders = [i for i in up if self.hosts[i].live().role is Role.LEADER]
            if up:  # leaders half of the time: their crashes leave the hardest logs behind
                self._crash(self.rng.choice(leaders if leaders and r() < 0.5 else up))
        if r() < p.pause_rate / TICK:
            i = self.rng.choice(self.ids)
            self._paused_until[i] = self.now + self.rng.randint(1, 30) * TICK
            self._note(f"{i} paused until t={self._paused_until[i] / TICK:g}")

    def _propose(self) -> None:
        ready = [i for i in self.ids if self.hosts[i].up and self._paused_until[i] <= self.now]
        if not ready:
            return
        host = self.hosts[self.rng.choice(ready)]
        data = str(len(self.proposals) + 1).encode()
        seqs: list[int] = []
        self._step(host, f"propose {data.decode()}", lambda c: seqs.append(c.propose(data)))
        self.proposals[(host.session, seqs[0])] = (data, self.now)

    def _read(self) -> None:
        ready = [i for i in self.ids if self.hosts[i].up and self._paused_until[i] <= self.now]
        if not ready:
            return
        host = self.hosts[self.rng.choice(ready)]
        self.reads_asked += 1
        context = f"r{self.reads_asked}"
        self.reads[context] = [host.id, len(self.checker.committed), self.now]
        self._step(host, f"read {context}", lambda c: c.read_index(context))

    def _ask_again(self) -> None:
        """A read unanswered for an election timeout is asked again, as a driver does."""
        due = self.now - self.profile.core.election_ticks[0] * TICK
        for context, read in list(self.reads.items()):
            node, asked = str(read[0]), int(read[2])
            host = self.hosts[node]
            if asked <= due and host.up and self._paused_until[node] <= self.now:
                read[2] = self.now
                self._step(host, f"read {context} again",
                           functools.partial(RaftCore.read_index, context=context))

    def _answered(self, node: str, read: ReadState) -> None:
        asked = self.reads.get(read.context)
        if asked is None or asked[0] != node:
            return  # answered already, or asked of a node that crashed since
        del self.reads[read.context]
        self.reads_served += 1
        floor = int(asked[1])
        if read.index < floor:
            raise SafetyViolation(
                f"stale read: {read.context} at {node}, asked when entry {floor} was "
                f"committed, was answered at index {read.index}")

    def _partition(self) -> None:
        self.partitions += 1
        ids = list(self.ids)
        shape = self.rng.randrange(3)
        leaders = [i for i in ids if self.hosts[i].up and self.hosts[i].live().role is Role.LEADER]
        if shape == 0 and leaders:  # isolate a leader
            self._group[self.rng.choice(leaders)] = 1
        elif shape == 1 and len(ids) > 1:  # split in two
            self.rng.shuffle(ids)
            for i in ids[: self.rng.randint(1, len(ids) - 1)]:
                self._group[i] = 1
        else:  # some one-way links
            for _ in range(self.rng.randint(1, 2 * len(ids))):
                self._blocked[(self.rng.choice(ids), self.rng.choice(ids))] = True
        self._heal_at = self.now + self.rng.randint(2, self.profile.outage) * TICK
        self._note(f"partition {self._group} {list(self._blocked)}")

    def _heal(self) -> None:
        if not self._chaos_on:
            self._isolated = {}
        self._group = dict.fromkeys(self.ids, 0)
        self._blocked = {}
        self._heal_at = -1
        self._note("healed")

    def _crash(self, i: str) -> None:
        self.hosts[i].crash()
        self._crashed(i, "crash")

    def _crashed(self, i: str, how: str) -> None:
        self.crashes += 1
        self._doomed.pop(i, None)
        self.checker.crashed(i)
        self.reads = {k: v for k, v in self.reads.items() if v[0] != i}
        self._paused_until[i] = 0
        self._down_until[i] = self.now + self.rng.randint(1, self.profile.outage) * TICK
        self._note(f"{i}: {how}, down until t={self._down_until[i] / TICK:g}")

    def _restart(self, i: str) -> None:
        host = self.hosts[i]
        host.restart(self._node_rng(i, host.incarnation + 1))
        self._step(host, "restart", lambda c: None)

    def _heal_all(self) -> None:
        self._chaos_on = False
        self._heal()
        self._drop = self._dup = self._spike = 0.0
        for i in self.ids:
            self._paused_until[i] = 0
            if not self.hosts[i].up:
                self._restart(i)

    def _node_rng(self, node: str, incarnation: int) -> random.Random:
        return random.Random(f"{self.seed}/{node}/{incarnation}")

    def _note(self, event: str) -> None:
        if self._trace is not None:
            self._trace.append(f"  t={self.now / TICK:g} {event}")

    # ---- the end --------------------------------------------------------------------

    def _quiet(self) -> bool:
        cores = [self.hosts[i].live() for i in self.ids]
        leaders = [c for c in cores if c.role is Role.LEADER]
        if len(leaders) != 1 or self.reads:
            return False
        lead = leaders[0]
        last, term = lead.log.last_index, lead.log.last_term
        return all(
            c.term == lead.term and c.leader == lead.id and c.pending_proposals == 0
            and c.log.last_index == last and c.log.last_term == term and c.log.commit == last
            for c in cores
        )

    def _summary(self) -> str:
        parts = []
        for i in self.ids:
            c = self.hosts[i].live()
            parts.append(f"{i}: term {c.term} {c.role.value} leader {c.leader} last "
                         f"{c.log.last_index} commit {c.log.commit} pending "
                         f"{c.pending_proposals}")
        if self.reads:
            parts.append(f"reads unanswered: {sorted(self.reads)[:5]}")
        return "; ".join(parts)

    def _final_checks(self) -> int:
        lead = next(h for h in self.hosts.values() if h.live().role is Role.LEADER)
        log = lead.full_log()
        for h in self.hosts.values():
            if h.applied != log:
                raise LivenessViolation(f"{h.id} applied a different sequence than the log")
        where: dict[tuple[str, int], int] = {}
        by_client: dict[str, list[int]] = {}
        for e in log:
            if not e.client:
                continue
            key = (e.client, e.seq)
            if key in where:
                raise SafetyViolation(f"{key} committed twice, at {where[key]} and {e.index}")
            proposal = self.proposals.get(key)
            if proposal is None or proposal[0] != e.data:
                raise SafetyViolation(f"{e} was never proposed")
            where[key] = e.index
            by_client.setdefault(e.client, []).append(e.seq)
        for client, seqs in by_client.items():
            if seqs != list(range(1, len(seqs) + 1)):
                raise SafetyViolation(f"session {client} committed out of order: {seqs}")
        live = {h.session for h in self.hosts.values()}
        for key in self.proposals:
            if key[0] in live and key not in where:
                raise LivenessViolation(f"proposal {key} of a running node never committed")
        for key in self.acks:
            if key not in where:
                raise LivenessViolation(f"acknowledged proposal {key} is not in the log")
        _check_real_time(self.proposals, self.acks, where)
        return len(log)


def _describe(what: str | Message) -> str:
    if isinstance(what, str):
        return what
    m = what
    return (f"{m.type.name} from {m.src} (term {m.term}, index {m.index}, "
            f"{len(m.entries)} entries{', reject' if m.reject else ''})")


def _check_real_time(proposals: dict[tuple[str, int], tuple[bytes, int]],
                     acks: dict[tuple[str, int], int], where: dict[tuple[str, int], int]) -> None:
    """Linearizability of appends: a proposal made after another was acknowledged lands
    after it in the log."""
    done = sorted((t, where[k], k) for k, t in acks.items())
    started = sorted((proposals[k][1], where[k], k) for k in where)
    j, high, high_key = 0, 0, ("", 0)
    for t, index, key in started:
        while j < len(done) and done[j][0] < t:
            if done[j][1] > high:
                high, high_key = done[j][1], done[j][2]
            j += 1
        if index < high:
            raise SafetyViolation(
                f"{key}, proposed after {high_key} was acknowledged, sits before it "
                f"({index} < {high})"
            )


def run_seed(seed: int, config: SimConfig = SimConfig(),
             core_class: type[RaftCore] = RaftCore) -> SimResult:
    """Run one seed; raise SimulationFailure (naming the seed) on any violation."""
    return Simulation(seed, config, core_class).run()

