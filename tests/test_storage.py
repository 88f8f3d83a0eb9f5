"""Both stores against one model: what is saved is what the read path gives back, and
the file store gives it back after a restart too."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflux_raft import Entry, EntryUnavailable, FileStorage, HardState, MemoryStorage, Storage


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
