"""Durable storage on local disk: an append-only log file and an atomically replaced
hard-state file, both fsynced before `save` returns, so a node survives `kill -9`; a
lock file keeps a second node out of the same directory."""

from __future__ import annotations

import fcntl
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import orjson

from .._errors import ConfigError, CorruptStorage
from ..core import Entry, EntryKind, HardState, Snapshot
from ._protocol import check_range

_HEADER = struct.Struct(">II")  # payload length, crc32 of payload


class FileStorage:
    """Keeps term, vote, commit and log under `path` (a directory, created if missing).

    Each log record is a length, a CRC and an orjson array. On load, a torn tail (a crash
    in the middle of a write: a bad record with no good one after it) is cut off; a bad
    record anywhere else raises CorruptStorage. Overwriting entries truncates the file at
    the first replaced record. The directory is locked (flock on `lock`) until `close`:
    a second store on it raises ConfigError at once, and the first goes on.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
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
        self._hs_path = self.path / "hardstate.json"
        self._offsets: list[int] = []  # file offset of entry i+1
        self._terms: list[int] = []  # term of entry i+1
        self._term_vote: tuple[int, str | None] = (0, None)
        self._log = open(self.path / "log.bin", "a+b")  # noqa: SIM115 - kept open
        self._end = 0  # file offset after the last entry

    def load(self) -> tuple[HardState, list[Entry]]:
        hs = HardState()
        if self._hs_path.exists():
            try:
                term, vote, commit = orjson.loads(self._hs_path.read_bytes())
            except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
                raise CorruptStorage(f"{self._hs_path}: not a hard state ({exc})") from None
            hs = HardState(term, vote, commit)
            self._term_vote = (term, vote)
        self._log.seek(0)
        raw = self._log.read()
        entries: list[Entry] = []
        self._offsets = []
        pos = 0
        while pos < len(raw):
            entry = _record(raw, pos)
            if entry is None or entry.index != len(entries) + 1:
                if entry is not None or _good_record_after(raw, pos):
                    raise CorruptStorage(
                        f"{self.path / 'log.bin'}: bad record at offset {pos} (entry "
                        f"{len(entries) + 1}) with good records after it: refusing to "
                        "start rather than drop entries that may be committed")
                break  # a torn tail
            entries.append(entry)
            self._offsets.append(pos)
            pos += _HEADER.size + _HEADER.unpack_from(raw, pos)[0]
        self._terms = [e.term for e in entries]
        self._end = pos
        if pos != len(raw):
            self._log.truncate(pos)
            self._sync(self._log.fileno())
        return hs, entries

    def save(self, hard_state: HardState | None, entries: Sequence[Entry]) -> None:
        if entries:
            first = entries[0].index
            if first <= len(self._offsets):
                self._log.truncate(self._offsets[first - 1])
                del self._offsets[first - 1 :]
                del self._terms[first - 1 :]
            self._log.seek(0, os.SEEK_END)
            pos = self._log.tell()
            chunks = []
            for e in entries:
                body = orjson.dumps([e.term, e.index, int(e.kind), e.data.decode(), e.client,
                                     e.seq])
                chunks.append(_HEADER.pack(len(body), zlib.crc32(body)) + body)
                self._offsets.append(pos)
                self._terms.append(e.term)
                pos += len(chunks[-1])
            self._log.write(b"".join(chunks))
            self._log.flush()
            self._sync(self._log.fileno())
            self._end = pos
        # Only term and vote must be durable; commit is rewritten along with them.
        if hard_state is not None and (hard_state.term, hard_state.vote) != self._term_vote:
            self._term_vote = (hard_state.term, hard_state.vote)
            self._replace(self._hs_path,
                          orjson.dumps([hard_state.term, hard_state.vote, hard_state.commit]))

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
        index, term and voters, then the data."""
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
        index, term, voters = orjson.loads(meta)
        return Snapshot(index, term, tuple(voters), data)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        meta = orjson.dumps([snapshot.index, snapshot.term, list(snapshot.voters)])
        self._replace(self.path / "snapshot.bin",
                      _HEADER.pack(len(meta), zlib.crc32(meta + snapshot.data)) + meta
                      + snapshot.data)

    def _replace(self, path: Path, data: bytes) -> None:
        """Write `path` atomically: a temporary file, fsynced, renamed, directory fsynced."""
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            self._sync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            self._sync(dir_fd)
        finally:
            os.close(dir_fd)

    def first_index(self) -> int:
        return 1

    def last_index(self) -> int:
        return len(self._offsets)

    def term(self, index: int) -> int:
        if index == 0:
            return 0
        check_range(index, index + 1, 1, len(self._terms))
        return self._terms[index - 1]

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Read back from the file: one seek, one read."""
        check_range(lo, hi, 1, len(self._offsets))
        if lo == hi:
            return []
        start = self._offsets[lo - 1]
        stop = self._offsets[hi - 1] if hi <= len(self._offsets) else self._end
        self._log.seek(start)
        raw = self._log.read(stop - start)
        out, pos = [], 0
        while pos < len(raw):
            size, _ = _HEADER.unpack_from(raw, pos)
            out.append(_decode(raw[pos + _HEADER.size : pos + _HEADER.size + size]))
            pos += _HEADER.size + size
        return out

    def close(self) -> None:
        self._log.close()
        os.close(self._lock)  # and the lock with it

    @staticmethod
    def _sync(fd: int) -> None:
        os.fsync(fd)


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
