"""Both stores against one model: what is saved is what the read path gives back, and
the file store gives it back after a restart too."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflux_raft import (
    ConfigError,
    CorruptStorage,
    Entry,
    EntryUnavailable,
    FileStorage,
    HardState,
    MemoryStorage,
    Snapshot,
    Storage,
)


def saves() -> st.SearchStrategy[list[tuple[int, list[int]]]]:
    """Batches of (first index, terms): each overwrites the log from its first index."""
    return st.lists(st.tuples(st.integers(1, 12), st.lists(st.integers(1, 5), max_size=5)),
                    max_size=8)


def play(storage: Storage, batches: list[tuple[int, list[int]]]) -> list[Entry]:
    model: list[Entry] = []
    for first, terms in batches:
        first = min(first, len(model) + 1)  # a save never leaves a gap
        batch = [Entry(t, first + i, b'"%d"' % (first + i)) for i, t in enumerate(terms)]
        storage.save(HardState(len(model), f"n{len(batch)}", 0), batch)
        if batch:
            model[first - 1 :] = batch
    return model


def last_hard_state(batches: list[tuple[int, list[int]]]) -> HardState:
    length = 0
    hs = HardState()
    for first, terms in batches:
        first = min(first, length + 1)
        hs = HardState(length, f"n{len(terms)}", 0)
        if terms:
            length = first - 1 + len(terms)
    return hs


def check(storage: Storage, model: list[Entry]) -> None:
    assert storage.first_index() == 1
    assert storage.last_index() == len(model)
    assert storage.entries(1, len(model) + 1) == model
    assert storage.term(0) == 0
    for e in model:
        assert storage.term(e.index) == e.term
        assert storage.entries(e.index, e.index + 1) == [e]
    assert storage.entries(len(model) + 1, len(model) + 1) == []
    for lo, hi in ((0, 1), (1, len(model) + 2), (3, 2)):
        with pytest.raises(EntryUnavailable):
            storage.entries(lo, hi)
    with pytest.raises(EntryUnavailable):
        storage.term(len(model) + 1)


@given(saves())
def test_memory_storage_reads_back_what_was_saved(batches: list[tuple[int, list[int]]]) -> None:
    storage = MemoryStorage()
    check(storage, play(storage, batches))
    assert storage.load()[0] == last_hard_state(batches)


@pytest.mark.parametrize("segment_bytes", [40, 8 << 20])  # two records a segment; one
@settings(max_examples=40, deadline=None)
@given(saves())
def test_file_storage_reads_back_what_was_saved_before_and_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, segment_bytes: int,
    batches: list[tuple[int, list[int]]]
) -> None:
    path: Path = tmp_path_factory.mktemp("log")
    storage = FileStorage(path, segment_bytes=segment_bytes)
    storage.load()
    model = play(storage, batches)
    check(storage, model)
    storage.close()
    again = FileStorage(path, segment_bytes=segment_bytes)
    hard_state, entries = again.load()
    assert (entries, hard_state) == (model, last_hard_state(batches))
    check(again, model)
    again.close()


def filled(path: Path, n: int = 5) -> list[Entry]:
    storage = FileStorage(path)
    storage.load()
    entries = [Entry(1, i, b'"%d"' % i) for i in range(1, n + 1)]
    storage.save(HardState(1, "a", 0), entries)
    storage.close()
    return entries


def test_a_second_store_on_a_directory_is_refused_and_the_first_goes_on(tmp_path: Path) -> None:
    first = FileStorage(tmp_path)
    first.load()
    with pytest.raises(ConfigError, match="in use by another node"):
        FileStorage(tmp_path)
    first.save(None, [Entry(1, 1, b"1")])
    assert first.entries(1, 2) == [Entry(1, 1, b"1")]
    first.close()
    again = FileStorage(tmp_path)  # the lock goes with close
    assert again.load()[1] == [Entry(1, 1, b"1")]
    again.close()


def segment(path: Path, start: int) -> Path:
    return path / f"log-{start:020d}.bin"


def test_a_torn_tail_is_cut(tmp_path: Path) -> None:
    entries = filled(tmp_path / "a")
    four = segment(tmp_path / "b", 1)
    filled(tmp_path / "b", 4)
    log = segment(tmp_path / "a", 1)
    for tail in (log.read_bytes()[:-3], four.read_bytes() + bytes(100)):
        log.write_bytes(tail)  # the last record half written; a zero-filled tail
        storage = FileStorage(tmp_path / "a")
        assert storage.load()[1] == entries[:4]
        storage.close()
        assert log.read_bytes() == four.read_bytes()  # cut at the last good record


def test_a_bad_record_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    # It used to cut the log there, dropping entries that may have been committed.
    filled(tmp_path)
    log = segment(tmp_path, 1)
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    storage = FileStorage(tmp_path)
    with pytest.raises(CorruptStorage,
                       match=r"log-0{19}1\.bin: bad record at offset \d+ \(entry \d\)"):
        storage.load()
    storage.close()
    assert log.read_bytes() == bytes(data)  # nothing was cut


def test_both_stores_keep_the_voters(tmp_path: Path) -> None:
    memory = MemoryStorage()
    assert memory.load_voters() is None
    memory.save_voters(["a", "b", "c"])
    assert memory.load_voters() == ("a", "b", "c")
    disk = FileStorage(tmp_path)
    assert disk.load_voters() is None
    disk.save_voters(["a", "b", "c"])
    disk.close()
    again = FileStorage(tmp_path)
    assert again.load_voters() == ("a", "b", "c")
    (tmp_path / "voters.json").write_bytes(b"[1, 2]")
    with pytest.raises(CorruptStorage, match="voters"):
        again.load_voters()
    again.close()


def test_both_stores_keep_a_snapshot(tmp_path: Path) -> None:
    snap = Snapshot(7, 2, ("a", "b", "c"), b"\x00state\xff")
    memory = MemoryStorage()
    assert memory.snapshot() is None
    memory.save_snapshot(snap)
    assert memory.snapshot() == snap
    disk = FileStorage(tmp_path)
    assert disk.snapshot() is None
    disk.save_snapshot(Snapshot(3, 1, ("a",), b"older"))
    disk.save_snapshot(snap)  # replaces it, atomically
    disk.close()
    again = FileStorage(tmp_path)
    assert again.snapshot() == snap
    path = tmp_path / "snapshot.bin"
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptStorage, match="snapshot"):
        again.snapshot()
    again.close()


# ---- snapshots, compaction and segments ----------------------------------------------------


def starts(path: Path) -> list[int]:
    """The first index of each segment file in `path`."""
    return sorted(int(p.name[4:24]) for p in path.glob("log-*.bin"))


def numbered(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, b'"%d"' % i) for i in range(lo, hi)]


def opened(path: Path, segment_bytes: int = 100) -> FileStorage:
    storage = FileStorage(path, segment_bytes=segment_bytes)
    storage.load()
    return storage


def test_compaction_deletes_whole_segments_and_keeps_the_rest_readable(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    log = numbered(1, 31)
    for i in range(0, 30, 4):  # batches that cross segment boundaries
        storage.save(HardState(1, "a", 0), log[i : i + 4])
    before = starts(tmp_path)
    assert len(before) > 5 and before[0] == 1
    assert storage.entries(1, 31) == log
    holding = max(s for s in before if s <= 18)  # the segment that holds entry 18
    kept = segment(tmp_path, holding).read_bytes()
    storage.save_snapshot(Snapshot(20, 1, ("a",), b"state"))  # held: the log stays
    assert (storage.first_index(), starts(tmp_path)) == (1, before)
    storage.compact(17)
    assert starts(tmp_path) == [s for s in before if s >= holding]
    assert segment(tmp_path, holding).read_bytes() == kept  # not rewritten
    assert (storage.first_index(), storage.last_index()) == (18, 30)
    assert storage.entries(18, 31) == log[17:]
    assert storage.entries(19, 23) == log[18:22]
    assert storage.term(18) == 1
    with pytest.raises(EntryUnavailable):
        storage.entries(17, 18)  # still in the file, no longer reported
    with pytest.raises(EntryUnavailable):
        storage.term(17)
    storage.compact(5)  # before the first held entry: nothing changes
    assert storage.first_index() == 18
    storage.save(None, numbered(31, 35))  # appends go on after a compaction
    assert storage.entries(18, 35) == numbered(18, 35)
    storage.close()


def test_a_reopened_store_after_a_snapshot_and_compaction_holds_what_it_held(
    tmp_path: Path,
) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(3, "b", 25), numbered(1, 31))
    snap = Snapshot(25, 1, ("a", "b"), b"state", (("c1", 4), ("c2", 9)))
    storage.save_snapshot(snap)
    storage.compact(20)  # a trailing window of 5 entries before the snapshot
    storage.close()
    again = opened(tmp_path)
    assert again.load() == (HardState(3, "b", 25), numbered(26, 31))  # after the snapshot
    assert again.snapshot() == snap  # with its sessions
    # The compaction point survives too: entries up to 20 stay hidden, 21.. are held.
    assert (again.first_index(), again.last_index()) == (21, 30)
    assert again.entries(21, 31) == numbered(21, 31)
    with pytest.raises(EntryUnavailable):
        again.term(20)
    again.compact(30)  # everything: no segment is left, and the log goes on after it
    assert (starts(tmp_path), again.first_index(), again.last_index()) == ([], 31, 30)
    again.save(None, numbered(31, 33))
    again.close()
    third = opened(tmp_path)
    assert third.load()[1] == numbered(31, 33)
    assert (third.first_index(), third.last_index()) == (31, 32)
    third.close()


def test_a_snapshot_the_log_does_not_follow_empties_it(tmp_path: Path) -> None:
    storage = opened(tmp_path)
    storage.save(HardState(1, "a", 0), numbered(1, 11))
    storage.save_snapshot(Snapshot(5, 2, ("a",), b"s"))  # entry 5 is of term 1: not held
    assert (starts(tmp_path), storage.first_index(), storage.last_index()) == ([], 6, 5)
    with pytest.raises(EntryUnavailable):
        storage.term(5)
    storage.save(HardState(2, "a", 0), numbered(6, 9, term=2))
    assert starts(tmp_path) == [6]
    storage.save_snapshot(Snapshot(15, 2, ("a",), b"t"))  # beyond the log: not held
    assert (starts(tmp_path), storage.first_index(), storage.last_index()) == ([], 16, 15)
    storage.save(None, numbered(16, 19, term=3))
    assert starts(tmp_path) == [16]
    storage.close()
    again = opened(tmp_path)
    assert again.load() == (HardState(2, "a", 0), numbered(16, 19, term=3))
    assert (again.first_index(), again.last_index()) == (16, 18)
    assert again.entries(16, 19) == numbered(16, 19, term=3)
    again.close()


def test_a_crash_between_a_snapshot_and_emptying_the_log_is_finished_on_load(
    tmp_path: Path,
) -> None:
    filled(tmp_path / "a", 10)
    other = FileStorage(tmp_path / "b")
    other.save_snapshot(Snapshot(5, 2, ("a",), b"s"))  # does not follow a's log
    other.close()
    # What a crash leaves once the snapshot is durable and before a segment is deleted.
    (tmp_path / "b" / "snapshot.bin").replace(tmp_path / "a" / "snapshot.bin")
    storage = opened(tmp_path / "a")
    assert storage.load()[1] == []
    assert (starts(tmp_path / "a"), storage.first_index(), storage.last_index()) == ([], 6, 5)
    storage.close()


def test_an_overwrite_across_segment_boundaries(tmp_path: Path) -> None:
    storage = opened(tmp_path, segment_bytes=40)  # two records a segment
    storage.save(HardState(1, "a", 0), numbered(1, 21))
    before = starts(tmp_path)
    assert before == list(range(1, 21, 2))
    # From the middle of a segment: it is cut at entry 8's record, later ones go.
    storage.save(HardState(2, "b", 0), numbered(8, 11, term=2))
    assert starts(tmp_path) == [1, 3, 5, 7, 9]
    assert storage.entries(1, 11) == numbered(1, 8) + numbered(8, 11, term=2)
    assert storage.last_index() == 10
    # From the first entry of a segment: the file keeps its name, emptied and refilled.
    storage.save(HardState(3, "c", 0), numbered(5, 7, term=3))
    assert starts(tmp_path) == [1, 3, 5]
    expected = numbered(1, 5) + numbered(5, 7, term=3)
    assert storage.entries(1, 7) == expected
    storage.close()
    again = opened(tmp_path, segment_bytes=40)
    assert again.load() == (HardState(3, "c", 0), expected)
    again.close()


def test_only_the_last_segment_may_have_a_torn_tail(tmp_path: Path) -> None:
    storage = opened(tmp_path, segment_bytes=40)
    storage.save(HardState(1, "a", 0), numbered(1, 7))
    storage.close()
    assert starts(tmp_path) == [1, 3, 5]
    last, middle = segment(tmp_path, 5), segment(tmp_path, 3)
    whole = last.read_bytes()
    last.write_bytes(whole[:-3])  # the last record half written
    again = opened(tmp_path, segment_bytes=40)
    assert again.load()[1] == numbered(1, 6)
    again.save(None, numbered(6, 8))  # appends go on where the tail was cut
    again.close()
    third = opened(tmp_path, segment_bytes=40)
    assert third.load()[1] == numbered(1, 8)
    third.close()
    # A torn tail anywhere but in the last segment is refused, as is a bad record.
    good = middle.read_bytes()
    second = _len_of_first_record(good)
    for bad, at in ((good[:-3], f"offset {second} \\(entry 4\\)"),
                    (good[:5] + bytes([good[5] ^ 0xFF]) + good[6:], r"offset 0 \(entry 3\)")):
        middle.write_bytes(bad)
        broken = FileStorage(tmp_path, segment_bytes=40)
        with pytest.raises(CorruptStorage, match=rf"log-0{{19}}3\.bin: bad record at {at} in "
                                                 "a segment that later segments follow"):
            broken.load()
        broken.close()
        assert middle.read_bytes() == bad  # nothing was cut
    middle.write_bytes(good)


def _len_of_first_record(raw: bytes) -> int:
    return 8 + int.from_bytes(raw[:4], "big")  # its header (length, CRC) and its payload


def test_a_missing_segment_is_refused(tmp_path: Path) -> None:
    storage = opened(tmp_path, segment_bytes=40)
    storage.save(HardState(1, "a", 0), numbered(1, 9))
    storage.close()
    fifth = segment(tmp_path, 5).read_bytes()
    segment(tmp_path, 5).unlink()
    broken = FileStorage(tmp_path, segment_bytes=40)
    with pytest.raises(CorruptStorage, match=r"log-0{19}7\.bin: its first entry is 7, but "
                                             r"the segment before ends at 4"):
        broken.load()
    broken.close()
    segment(tmp_path, 5).write_bytes(fifth)
    segment(tmp_path, 1).unlink()  # the first one, with no snapshot holding its entries
    broken = FileStorage(tmp_path, segment_bytes=40)
    with pytest.raises(CorruptStorage, match=r"entries 1\.\.2 are missing"):
        broken.load()
    broken.close()


def test_a_directory_of_the_single_file_layout_opens(tmp_path: Path) -> None:
    entries = filled(tmp_path, 6)  # one segment: the old log.bin had the same records
    segment(tmp_path, 1).rename(tmp_path / "log.bin")
    # A snapshot written before sessions were kept: index, term and voters only.
    meta = b'[3,1,["a","b"]]'
    (tmp_path / "snapshot.bin").write_bytes(
        struct.pack(">II", len(meta), zlib.crc32(meta + b"old")) + meta + b"old")
    storage = opened(tmp_path)
    assert storage.snapshot() == Snapshot(3, 1, ("a", "b"), b"old", ())
    assert storage.load() == (HardState(1, "a", 0), entries[3:])
    assert not (tmp_path / "log.bin").exists()
    assert starts(tmp_path) == [1]
    assert (storage.first_index(), storage.entries(1, 7)) == (1, entries)
    storage.save(None, numbered(7, 9))
    storage.close()
    again = opened(tmp_path)
    assert again.entries(1, 9) == numbered(1, 9)
    again.close()
    # Both layouts at once: which log is right is not for the store to guess.
    (tmp_path / "log.bin").write_bytes(segment(tmp_path, 1).read_bytes())
    broken = FileStorage(tmp_path)
    with pytest.raises(CorruptStorage, match="single-file layout"):
        broken.load()
    broken.close()


def test_memory_stays_flat_as_the_log_grows_and_is_compacted(tmp_path: Path) -> None:
    storage = opened(tmp_path, segment_bytes=4096)
    for lo in range(1, 20_001, 100):
        storage.save(HardState(1, "a", 0), numbered(lo, lo + 100))
        if lo % 1000 == 901:  # every 1,000 entries: snapshot, and compact to it
            storage.save_snapshot(Snapshot(lo + 99, 1, ("a",), b"s"))
            storage.compact(lo + 99 - 50)  # a trailing window of 50 entries
    assert (storage.first_index(), storage.last_index()) == (19_951, 20_000)
    held = (len(storage._terms), len(storage._offsets), len(storage._segments))
    assert held[0] == held[1] == 50 and held[2] <= 3
    assert len(starts(tmp_path)) <= 3
    storage.close()
    again = opened(tmp_path, segment_bytes=4096)
    assert again.load()[1] == []
    assert (len(again._terms), len(again._segments), again.first_index()) == (50, held[2],
                                                                               19_951)
    again.close()


def test_a_snapshot_no_newer_than_the_saved_one_is_ignored(tmp_path: Path) -> None:
    # A node's own snapshot, saved from its apply thread, may lose the race to a newer
    # one received from the leader: it must not replace it, nor empty the log.
    disk, memory = opened(tmp_path, segment_bytes=40), MemoryStorage()
    for storage in (disk, memory):
        storage.save(None, numbered(1, 11))
        storage.save_snapshot(Snapshot(8, 1, (), b"new"))
        storage.compact(8)
        storage.save_snapshot(Snapshot(5, 1, (), b"old"))
        storage.save_snapshot(Snapshot(8, 2, (), b"same index"))
        snap = storage.snapshot()
        assert snap is not None and snap.data == b"new"
        assert storage.first_index() == 9
    same(disk, memory)
    disk.close()
    again = opened(tmp_path, segment_bytes=40)
    same(again, memory)
    assert again.load() == memory.load() == (HardState(), numbered(9, 11))
    again.close()


def test_a_save_that_would_leave_a_gap_or_reach_compacted_entries_is_refused(
    tmp_path: Path,
) -> None:
    storage = opened(tmp_path)
    storage.save(None, numbered(1, 6))
    storage.save_snapshot(Snapshot(3, 1, (), b""))
    storage.compact(3)
    for lo in (2, 8):
        with pytest.raises(ValueError, match=r"the storage holds 4\.\.5"):
            storage.save(None, numbered(lo, lo + 1))
    unloaded = FileStorage(tmp_path / "other")
    with pytest.raises(RuntimeError, match=r"load\(\) comes before save\(\)"):
        unloaded.save(None, numbered(1, 2))
    unloaded.close()
    storage.close()


Op = tuple[str, int, int]


def ops() -> st.SearchStrategy[list[Op]]:
    """save (from, count), snapshot (index, whether of the held term), compact (index),
    reopen: each number relative, resolved against what the stores hold then. Snapshots
    and compactions may reach before the first entry held (older than the last)."""
    return st.lists(st.one_of(
        st.tuples(st.just("save"), st.integers(0, 8), st.integers(1, 5)),
        st.tuples(st.just("snapshot"), st.integers(-3, 12), st.integers(0, 1)),
        st.tuples(st.just("compact"), st.integers(-2, 12), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ), max_size=25)


def same(disk: FileStorage, memory: MemoryStorage) -> None:
    first, last = memory.first_index(), memory.last_index()
    assert (disk.first_index(), disk.last_index()) == (first, last)
    assert disk.entries(first, last + 1) == memory.entries(first, last + 1)
    for i in range(first, last + 1):
        assert disk.term(i) == memory.term(i)
        assert disk.entries(i, i + 1) == memory.entries(i, i + 1)
    for i in (first - 1, last + 1):
        if i > 0:
            with pytest.raises(EntryUnavailable):
                disk.term(i)
    assert disk.snapshot() == memory.snapshot()
    # Whole segments only: the first one holds the first entry, none holds nothing held.
    held = starts(disk.path)
    if first <= last:
        assert held[0] <= first and (len(held) == 1 or held[1] > first)
        assert held[-1] <= last
    else:
        assert held in ([], [first])


@settings(max_examples=150, deadline=None)
@given(ops())
def test_file_storage_with_snapshots_and_compaction_agrees_with_memory_storage(
    tmp_path_factory: pytest.TempPathFactory, steps: list[Op]
) -> None:
    path: Path = tmp_path_factory.mktemp("log")
    disk, memory = opened(path, segment_bytes=40), MemoryStorage()
    term = 1
    for n, (op, a, b) in enumerate(steps):
        first, last = memory.first_index(), memory.last_index()
        snap = memory.snapshot()
        if op == "save":  # an overwrite or an append, never of what a snapshot holds
            lo = max(first, snap.index + 1 if snap is not None else 1)
            if lo > last + 1:
                continue
            start = max(lo, last + 1 - a)
            term += 1
            batch = [Entry(term, i, b'"%d.%d"' % (i, n)) for i in range(start, start + b)]
            disk.save(HardState(term, "a", start), batch)
            memory.save(HardState(term, "a", start), batch)
        elif op == "snapshot":
            index = max(first - 1 + a, 0)
            held = b == 1 and first <= index <= last
            s = Snapshot(index, memory.term(index) if held else term + 1, ("a",),
                         b"%d" % n, (("c", n),))
            disk.save_snapshot(s)
            memory.save_snapshot(s)
        elif op == "compact":
            index = max(first - 1 + a, 0)
            disk.compact(index)
            memory.compact(index)
        else:
            disk.close()
            disk = FileStorage(path, segment_bytes=40)
            assert disk.load() == memory.load()
        same(disk, memory)
    assert disk.load() == memory.load()
    disk.close()
    again = opened(path, segment_bytes=40)
    same(again, memory)
    again.close()
