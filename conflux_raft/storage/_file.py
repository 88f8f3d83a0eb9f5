"""Durable storage on local disk: a log in segment files, and atomically replaced files for
the hard state, the voters, the snapshot and the compaction point, all fsynced before the
call returns, so a node survives `kill -9`; a lock file keeps a second node out of the
same directory."""

from __future__ import annotations

import fcntl
import functools
import os
import re
import struct
import threading
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson

from .._errors import ConfigError, CorruptStorage
from ..core import Entry, EntryKind, HardState, Snapshot
from ._protocol import check_range

_HEADER = struct.Struct(">II")  # payload length, crc32 of payload
_SEGMENT = re.compile(r"log-(\d{20})\.bin")
_LEGACY = "log.bin"  # the single log file of the layout before segments
_REFUSE = "refusing to start rather than drop entries that may be committed"


@dataclass(slots=True)
class _Segment:
    """One log file: records of entries `start`, `start + 1`, ... ; `size` bytes of them."""

    start: int
    path: Path
    size: int = 0


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run `method` holding the store's mutex."""
    @functools.wraps(method)
    def wrapper(self: FileStorage, *args: Any, **kwargs: Any) -> Any:
        with self._mutex:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class FileStorage:
    """Keeps term, vote, commit, log and snapshot under `path` (a directory, created if
    missing).

    The log is a run of segment files, `log-<index of its first entry, 20 digits>.bin`;
    appends go to the last one, and a new one starts once it holds `segment_bytes`. Each
    record is a length, a CRC and an orjson array. `compact` deletes the segments whose
    entries are all compacted (never rewriting one) and records the compaction point in
    `compacted.json`, so entries a surviving segment still holds below it stay hidden
    after a restart. Overwriting entries truncates the segment holding the first
    replaced record and deletes every later segment.

    On load, a torn tail of the last segment (a crash in the middle of a write: a bad
    record with no good one after it) is cut off; a bad record anywhere else, or a
    missing segment, raises CorruptStorage. A directory of the single-file layout
    (`log.bin`) is adopted as the first segment. The directory is locked (flock on
    `lock`) until `close`: a second store on it raises ConfigError at once, and the
    first goes on. `load` must be called before the log is written or read.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 segment_bytes: int = 8 * 1024 * 1024) -> None:
        if isinstance(segment_bytes, bool) or not isinstance(segment_bytes, int) \
                or segment_bytes < 1:
            raise ConfigError(f"segment_bytes: a positive number of bytes is required, "
                              f"not {segment_bytes!r}")
        self.path = Path(path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"storage path {str(self.path)!r}: {exc}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock)
            raise ConfigError(f"storage path {str(self.path)!r} is in use by another node "
                              f"(it holds {str(self.path / 'lock')!r}); give each node a "
                              "directory of its own") from None
        self._segment_bytes = segment_bytes
        self._hs_path = self.path / "hardstate.json"
        self._floor_path = self.path / "compacted.json"
        self._term_vote: tuple[int, str | None] = (0, None)
        # The entries held, first .. last: their terms, and their offsets in their segment.
        self._first = 1
        self._terms: array[int] = array("q")
        self._offsets: array[int] = array("q")
        self._segments: list[_Segment] = []  # by start; the held entries are in them
        self._log: BinaryIO | None = None  # the last segment, open for appends
        self._floor = 0  # the compaction point recorded in compacted.json
        self._loaded = False
        # A node saves its own snapshots from its apply thread, while its loop thread
        # appends and compacts: the bookkeeping is guarded, and snapshots are written one
        # at a time, never replacing a newer one.
        self._mutex = threading.RLock()
        self._snapshot_writer = threading.Lock()
        self._snapshot_index = 0

    # ---- load ------------------------------------------------------------------------

    @_locked
    def load(self) -> tuple[HardState, list[Entry]]:
        hs = HardState()
        if self._hs_path.exists():
            try:
                term, vote, commit = orjson.loads(self._hs_path.read_bytes())
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                raise CorruptStorage(f"{self._hs_path}: not a hard state ({exc})") from None
            hs = HardState(term, vote, commit)
            self._term_vote = (term, vote)
        snap = self.snapshot()
        self._snapshot_index = snap.index if snap is not None else 0
        self._floor = self._load_floor()
        self._close_log()
        self._segments = self._list_segments()
        after = max(self._floor, snap.index if snap is not None else 0)
        entries = self._read_segments(after)
        base = self._first
        last = self.last_index()
        if self._segments and base > after + 1:
            raise CorruptStorage(
                f"{self._segments[0].path}: entries {after + 1}..{base - 1} are missing (no "
                f"segment, snapshot or compaction holds them): {_REFUSE}")
        if snap is not None and self._segments and base <= snap.index and not (
                snap.index <= last and self._terms[snap.index - base] == snap.term):
            # A crash after the snapshot was saved and before the log it does not
            # follow was emptied: finish that.
            self._empty(snap.index)
            entries = []
        elif not self._segments:
            self._first = after + 1
        elif self._floor + 1 > base:  # entries a surviving segment holds up to the floor
            self._drop_before(self._floor + 1)  # segments left by a crash in compact too
        self._loaded = True
        return hs, entries

    def _load_floor(self) -> int:
        if not self._floor_path.exists():
            return 0
        try:
            floor = orjson.loads(self._floor_path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise CorruptStorage(f"{self._floor_path}: not a compaction point ({exc})") \
                from None
        if isinstance(floor, bool) or not isinstance(floor, int) or floor < 0:
            raise CorruptStorage(f"{self._floor_path}: not a compaction point")
        return floor

    def _list_segments(self) -> list[_Segment]:
        """The segment files by first index; the single-file layout's log adopted."""
        found = sorted((int(m[1]), self.path / m[0]) for name in os.listdir(self.path)
                       if (m := _SEGMENT.fullmatch(name)))
        legacy = self.path / _LEGACY
        if legacy.exists():
            if found:
                raise CorruptStorage(f"{legacy}: a log of the single-file layout next to "
                                     f"segment files ({found[0][1].name}, ...): {_REFUSE}")
            found = [(1, self._segment_path(1))]
            os.replace(legacy, found[0][1])
            self._sync_dir()
        return [_Segment(start, path) for start, path in found]

    def _read_segments(self, after: int) -> list[Entry]:
        """Check every record, fill the terms and offsets from the first segment on, cut
        a torn tail of the last one; return the entries after `after`."""
        self._terms, self._offsets = array("q"), array("q")
        self._first = self._segments[0].start if self._segments else 1
        entries: list[Entry] = []
        expected = self._first
        for k, seg in enumerate(self._segments):
            if seg.start != expected:
                raise CorruptStorage(
                    f"{seg.path}: its first entry is {seg.start}, but the segment before "
                    f"ends at {expected - 1} (a segment is missing or overlaps): {_REFUSE}")
            is_last = k == len(self._segments) - 1
            raw = seg.path.read_bytes()
            pos = 0
            while pos < len(raw):
                entry = _record(raw, pos)
                if entry is None or entry.index != expected:
                    where = f"{seg.path}: bad record at offset {pos} (entry {expected})"
                    if entry is not None:
                        raise CorruptStorage(f"{where}: it holds entry {entry.index}, out "
                                             f"of order: {_REFUSE}")
                    if not is_last:
                        raise CorruptStorage(f"{where} in a segment that later segments "
                                             f"follow: {_REFUSE}")
                    if _good_record_after(raw, pos):
                        raise CorruptStorage(
                            f"{where} with good records after it: {_REFUSE}")
                    break  # a torn tail
                self._terms.append(entry.term)
                self._offsets.append(pos)
                if entry.index > after:
                    entries.append(entry)
                expected += 1
                pos += _HEADER.size + _HEADER.unpack_from(raw, pos)[0]
            seg.size = pos
            if pos != len(raw):  # only the last segment's tail
                with open(seg.path, "r+b") as f:
                    f.truncate(pos)
                    self._sync(f.fileno())
        return entries

    # ---- the log ---------------------------------------------------------------------

    @_locked
    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        self._check_loaded()
        if entries:
            first, last = entries[0].index, self.last_index()
            if not self._first <= first <= last + 1:
                raise ValueError(f"entries from {first} saved; the storage holds "
                                 f"{self._first}..{last} (a save may overwrite held entries "
                                 "or append after the last, nothing else)")
            if first <= last:
                self._truncate_from(first)
            self._append(entries)
        # Only term and vote must be durable; commit is rewritten along with them.
        if hard_state is not None and (hard_state.term, hard_state.vote) != self._term_vote:
            self._term_vote = (hard_state.term, hard_state.vote)
            self._replace(self._hs_path,
                          orjson.dumps([hard_state.term, hard_state.vote, hard_state.commit]))

    def _truncate_from(self, index: int) -> None:
        """Drop entries `index` .. last: delete every segment after the one holding
        `index` (the newest first), then cut that one at its record."""
        k = bisect_right(self._segments, index, key=lambda s: s.start) - 1
        later = self._segments[k + 1 :]
        if later:
            self._close_log()
            for seg in reversed(later):
                os.unlink(seg.path)
            del self._segments[k + 1 :]
            self._sync_dir()  # before the cut: never a cut segment with later ones
        seg = self._segments[k]
        cut = index - self._first
        log = self._active()
        log.truncate(self._offsets[cut])
        self._sync(log.fileno())  # before new records go where the old ones were
        seg.size = self._offsets[cut]
        del self._terms[cut:]
        del self._offsets[cut:]

    def _append(self, entries: Sequence[Entry]) -> None:
        chunks: list[bytes] = []
        for e in entries:
            body = orjson.dumps([e.term, e.index, int(e.kind), e.data.decode(), e.client,
                                 e.seq])
            record = _HEADER.pack(len(body), zlib.crc32(body)) + body
            last = self._segments[-1] if self._segments else None
            if last is None or 0 < last.size >= self._segment_bytes:
                self._write(chunks)  # durable before the next segment exists
                self._new_segment(e.index)
            seg = self._segments[-1]
            self._terms.append(e.term)
            self._offsets.append(seg.size)
            seg.size += len(record)
            chunks.append(record)
        self._write(chunks)

    def _write(self, chunks: list[bytes]) -> None:
        if chunks:
            log = self._active()
            log.write(b"".join(chunks))
            log.flush()
            self._sync(log.fileno())
            chunks.clear()

    def _new_segment(self, start: int) -> None:
        self._close_log()
        seg = _Segment(start, self._segment_path(start))
        fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._log = os.fdopen(fd, "a+b")
        self._segments.append(seg)
        self._sync_dir()  # it exists before any segment after it can

    @_locked
    def compact(self, index: int) -> None:
        """Drop the entries up to `index` (a saved snapshot holds them): delete the
        segments that hold nothing after it; the first one left may still hold some
        entries up to `index`, which are no longer reported (nor after a restart)."""
        cut = min(max(index + 1 - self._first, 0), len(self._terms))
        if cut == 0:
            return
        first = self._first + cut
        self._floor = first - 1
        self._replace(self._floor_path, orjson.dumps(self._floor))  # before any deletion
        self._drop_before(first)

    def _drop_before(self, first: int) -> None:
        """Make `first` the first entry held: delete the segments holding only entries
        before it (the oldest first), trim the bookkeeping."""
        last = self.last_index()
        doomed = 0
        for k in range(len(self._segments)):
            end = self._segments[k + 1].start - 1 if k + 1 < len(self._segments) else last
            if end >= first:
                break
            doomed += 1
        if doomed == len(self._segments):
            self._close_log()
        for seg in self._segments[:doomed]:
            os.unlink(seg.path)
        del self._segments[:doomed]
        cut = min(first - self._first, len(self._terms))
        del self._terms[:cut]
        del self._offsets[:cut]
        self._first = first
        if doomed:
            self._sync_dir()

    def _empty(self, index: int) -> None:
        """Nothing held follows the snapshot at `index`: delete every segment (the
        newest first); the next entry saved is `index + 1`."""
        if self._floor > index:  # it must not hide entries saved after this snapshot
            self._floor = index
            self._replace(self._floor_path, orjson.dumps(index))
        self._close_log()
        for seg in reversed(self._segments):
            os.unlink(seg.path)
        if self._segments:
            self._sync_dir()
        self._segments = []
        self._terms, self._offsets = array("q"), array("q")
        self._first = index + 1

    @_locked
    def first_index(self) -> int:
        return self._first

    @_locked
    def last_index(self) -> int:
        return self._first + len(self._terms) - 1

    @_locked
    def term(self, index: int) -> int:
        if index == 0:
            return 0
        check_range(index, index + 1, self._first, self.last_index())
        return self._terms[index - self._first]

    @_locked
    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Read back from the segment files: one seek and one read in each."""
        last = self.last_index()
        check_range(lo, hi, self._first, last)
        out: list[Entry] = []
        k = bisect_right(self._segments, lo, key=lambda s: s.start) - 1
        while lo < hi:
            seg = self._segments[k]
            end = self._segments[k + 1].start if k + 1 < len(self._segments) else last + 1
            stop = min(hi, end)
            start_at = self._offsets[lo - self._first]
            stop_at = self._offsets[stop - self._first] if stop < end else seg.size
            raw = self._read(k, start_at, stop_at)
            pos = 0
            while pos < len(raw):
                size, _ = _HEADER.unpack_from(raw, pos)
                out.append(_decode(raw[pos + _HEADER.size : pos + _HEADER.size + size]))
                pos += _HEADER.size + size
            lo, k = stop, k + 1
        return out

    def _read(self, k: int, start: int, stop: int) -> bytes:
        if k == len(self._segments) - 1:
            log = self._active()
            log.seek(start)
            return log.read(stop - start)
        with open(self._segments[k].path, "rb") as f:
            f.seek(start)
            return f.read(stop - start)

    def _check_loaded(self) -> None:
        if not self._loaded:
            raise RuntimeError(f"{self.path}: load() comes before save()")

    def _active(self) -> BinaryIO:
        """The last segment, opened for appends."""
        if self._log is None:
            self._log = open(self._segments[-1].path, "a+b")  # noqa: SIM115 - kept open
        return self._log

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _segment_path(self, start: int) -> Path:
        return self.path / f"log-{start:020d}.bin"

    # ---- voters and snapshot -----------------------------------------------------------

    def load_voters(self) -> tuple[str, ...] | None:
        path = self.path / "voters.json"
        if not path.exists():
            return None
        try:
            voters = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise CorruptStorage(f"{path}: not a list of voters ({exc})") from None
        if not (isinstance(voters, list) and voters and all(isinstance(v, str) for v in voters)):
            raise CorruptStorage(f"{path}: not a list of voters")
        return tuple(voters)

    def save_voters(self, voters: Sequence[str]) -> None:
        self._replace(self.path / "voters.json", orjson.dumps(list(voters)))

    def snapshot(self) -> Snapshot | None:
        """Read back from `snapshot.bin`: a length and CRC header, then an orjson array of
        index, term, voters and sessions (files written before sessions were kept have
        only the first three), then the data."""
        path = self.path / "snapshot.bin"
        if not path.exists():
            return None
        raw = path.read_bytes()
        if len(raw) < _HEADER.size:
            raise CorruptStorage(f"{path}: too short for a snapshot")
        size, crc = _HEADER.unpack_from(raw)
        meta, data = raw[_HEADER.size : _HEADER.size + size], raw[_HEADER.size + size :]
        if len(meta) != size or zlib.crc32(meta + data) != crc:
            raise CorruptStorage(f"{path}: bad snapshot (length or CRC)")
        try:
            fields = orjson.loads(meta)
        except orjson.JSONDecodeError as exc:
            raise CorruptStorage(f"{path}: bad snapshot metadata ({exc})") from None
        snap = _snapshot(fields, data)
        if snap is None:
            raise CorruptStorage(f"{path}: bad snapshot metadata")
        return snap

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Write `snapshot.bin` atomically (unless a newer snapshot is saved already);
        then, if the log does not hold the snapshot's last entry, delete every segment
        (before `load`, the next `load` does). Safe beside `save` and `compact` on
        another thread: the file is written without holding up their bookkeeping."""
        with self._snapshot_writer:
            if snapshot.index <= self._snapshot_index:
                return
            meta = orjson.dumps([snapshot.index, snapshot.term, list(snapshot.voters),
                                 [[client, seq] for client, seq in snapshot.sessions]])
            self._replace(self.path / "snapshot.bin",
                          _HEADER.pack(len(meta), zlib.crc32(meta + snapshot.data)) + meta
                          + snapshot.data)
            with self._mutex:
                self._snapshot_index = snapshot.index
                i = snapshot.index - self._first
                if self._loaded and not (0 <= i < len(self._terms)
                                         and self._terms[i] == snapshot.term):
                    self._empty(snapshot.index)

    # ---- files -------------------------------------------------------------------------

    def _replace(self, path: Path, data: bytes) -> None:
        """Write `path` atomically: a temporary file, fsynced, renamed, directory fsynced."""
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            self._sync(f.fileno())
        os.replace(tmp, path)
        self._sync_dir()

    def _sync_dir(self) -> None:
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            self._sync(dir_fd)
        finally:
            os.close(dir_fd)

    def close(self) -> None:
        self._close_log()
        os.close(self._lock)  # and the lock with it

    @staticmethod
    def _sync(fd: int) -> None:
        os.fsync(fd)


def _snapshot(fields: Any, data: bytes) -> Snapshot | None:
    """The snapshot that metadata `fields` describe, or None if they are not that."""
    if not isinstance(fields, list) or len(fields) not in (3, 4):
        return None
    index, term, voters = fields[:3]
    sessions = fields[3] if len(fields) == 4 else []
    if not (all(isinstance(n, int) and not isinstance(n, bool) for n in (index, term))
            and isinstance(voters, list) and all(isinstance(v, str) for v in voters)
            and isinstance(sessions, list)
            and all(isinstance(s, list) and len(s) == 2 and isinstance(s[0], str)
                    and isinstance(s[1], int) and not isinstance(s[1], bool)
                    for s in sessions)):
        return None
    return Snapshot(index, term, tuple(voters), data,
                    tuple((client, seq) for client, seq in sessions))


def _record(raw: bytes, pos: int) -> Entry | None:
    """The entry whose record starts at `pos`, or None if none does."""
    if pos + _HEADER.size > len(raw):
        return None
    size, crc = _HEADER.unpack_from(raw, pos)
    start = pos + _HEADER.size
    if start + size > len(raw):
        return None
    body = raw[start : start + size]
    if zlib.crc32(body) != crc:
        return None
    try:
        return _decode(body)
    except (ValueError, TypeError, AttributeError):  # a CRC that matches by chance
        return None


def _good_record_after(raw: bytes, pos: int) -> bool:
    """Whether a valid record starts anywhere after `pos` (only on the error path)."""
    return any(_record(raw, p) is not None for p in range(pos + 1, len(raw) - _HEADER.size))


def _decode(body: bytes) -> Entry:
    term, index, kind, data, client, seq = orjson.loads(body)
    return Entry(term, index, data.encode(), EntryKind(kind), client, seq)
