"""Run seeded simulations of whole clusters and report violations.

    python -m conflux_raft.testing.simulate --seeds 1000 [--start 0] [--nodes K] [--jobs 2]
    python -m conflux_raft.testing.simulate --seeds 200 --storm always --ticks 600
    python -m conflux_raft.testing.simulate --seed 42 --trace 60    # replay one seed

Exits 1 if any seed finds a violation; each one is printed with the seed that replays it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from ..core import RaftCore
from ._sim import SimConfig, SimulationFailure, run_seed

_CHUNK = 25


def _run_chunk(seeds: range, config: SimConfig,
               core_class: type[RaftCore] = RaftCore) -> tuple[int, int, list[str]]:
    steps, reads, failures = 0, 0, []
    for seed in seeds:
        try:
            result = run_seed(seed, config, core_class)
        except SimulationFailure as exc:
            failures.append(str(exc))
        else:
            steps, reads = steps + result.steps, reads + result.reads
    return steps, reads, failures


def _chunks(seeds: range) -> Iterator[range]:
    for lo in range(seeds.start, seeds.stop, _CHUNK):
        yield range(lo, min(lo + _CHUNK, seeds.stop))


def run(seeds: range, config: SimConfig, jobs: int = 1, progress: bool = False,
        core_class: type[RaftCore] = RaftCore) -> int:
    """Run `seeds`, print a report, and return the number of violations. With `jobs` > 1,
    `core_class` must be importable by the worker processes."""
    started = time.perf_counter()
    steps, reads, failures, done = 0, 0, [], 0
    chunks = list(_chunks(seeds))
    if jobs > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(jobs) as pool:
            results = pool.map(_run_chunk, chunks, [config] * len(chunks),
                               [core_class] * len(chunks))
            for chunk, (n, r, failed) in zip(chunks, results, strict=True):
                steps, reads, done = steps + n, reads + r, done + len(chunk)
                failures += failed
                _report_progress(progress, done, len(seeds), failed)
    else:
        for chunk in chunks:
            n, r, failed = _run_chunk(chunk, config, core_class)
            steps, reads, done = steps + n, reads + r, done + len(chunk)
            failures += failed
            _report_progress(progress, done, len(seeds), failed)
    elapsed = time.perf_counter() - started
    for failure in failures:
        print(failure, end="\n\n")
    first, last = seeds.start, seeds.stop - 1
    print(f"seeds: {len(seeds)} ({first}..{last})  violations: {len(failures)}  "
          f"steps: {steps}  reads checked: {reads}  time: {elapsed:.1f}s")
    return len(failures)


def _report_progress(enabled: bool, done: int, total: int, failed: list[str]) -> None:
    for failure in failed:
        print(failure.splitlines()[0], file=sys.stderr, flush=True)
    if enabled:
        print(f"  {done}/{total} seeds", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m conflux_raft.testing.simulate",
        description="Seeded simulation of Raft clusters with faults and safety checks.",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    which.add_argument("--seed", type=int, help="replay this one seed")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds")
    parser.add_argument("--nodes", type=int, default=0, help="cluster size (0: drawn per seed)")
    parser.add_argument("--ticks", type=int, default=SimConfig().ticks,
                        help="ticks of faults and load per seed")
    parser.add_argument("--trace", type=int, default=0,
                        help="on failure, print this many of the last events")
    parser.add_argument("--no-faults", action="store_true", help="a calm network, no crashes")
    parser.add_argument("--storm", choices=("mixed", "always", "never"), default="mixed",
                        help="storms that hit every new leader: in one seed of four, or ...")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: one per CPU)")
    parser.add_argument("--progress", action="store_true", help="report progress on stderr")
    args = parser.parse_args(argv)
    if args.nodes < 0 or args.ticks < 1 or args.jobs < 1:
        parser.error("--nodes must be >= 0, --ticks and --jobs >= 1")
    storm = {"mixed": None, "always": True, "never": False}[args.storm]
    config = SimConfig(nodes=args.nodes, ticks=args.ticks, faults=not args.no_faults,
                       storm=storm, trace=args.trace)
    if args.seed is not None:
        seeds = range(args.seed, args.seed + 1)
    else:
        seeds = range(args.start, args.start + args.seeds)
    return 1 if run(seeds, config, args.jobs, args.progress) else 0


if __name__ == "__main__":
    sys.exit(main())
