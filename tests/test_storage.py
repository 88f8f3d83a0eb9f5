"""Both stores against one model: what is saved is what the read path gives back, and
the file store gives it back after a restart too."""

from __future__ import annotations

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


@settings(max_examples=40, deadline=None)
@given(saves())
def test_file_storage_reads_back_what_was_saved_before_and_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[int, list[int]]]
) -> None:
    path: Path = tmp_path_factory.mktemp("log")
    storage = FileStorage(path)
    storage.load()
    model = play(storage, batches)
    check(storage, model)
    storage.close()
    again = FileStorage(path)
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


def test_a_torn_tail_is_cut(tmp_path: Path) -> None:
    entries = filled(tmp_path / "a")
    four = (tmp_path / "b" / "log.bin")
    filled(tmp_path / "b", 4)
    log = tmp_path / "a" / "log.bin"
    for tail in (log.read_bytes()[:-3], four.read_bytes() + bytes(100)):
        log.write_bytes(tail)  # the last record half written; a zero-filled tail
        storage = FileStorage(tmp_path / "a")
        assert storage.load()[1] == entries[:4]
        storage.close()
        assert log.read_bytes() == four.read_bytes()  # cut at the last good record


def test_a_bad_record_in_the_middle_refuses_to_start(tmp_path: Path) -> None:
    # It used to cut the log there, dropping entries that may have been committed.
    filled(tmp_path)
    log = tmp_path / "log.bin"
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    storage = FileStorage(tmp_path)
    with pytest.raises(CorruptStorage, match=r"log\.bin: bad record at offset \d+ \(entry \d\)"):
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
