"""The wire codec: every message type round-trips; anything malformed raises exactly
MalformedMessage, never a stray KeyError or TypeError from inside."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import messages

from conflux_raft import Entry, EntryKind, MalformedMessage, Message, MsgType, decode, encode
from conflux_raft.transport import VERSION, encode_all

SECRET = b"shared secret"

SAMPLE = Message(
    MsgType.APPEND, "a", "b", term=3, log_term=2, index=7, commit=5,
    entries=(Entry(3, 8, b'{"type":"x"}', EntryKind.NORMAL, "a.1", 4),
             Entry(3, 9, b"", EntryKind.NOOP)),
    hint=1, hint_term=2, context="ctx", payload={"k": [1, 2]},
)


def body(msg: Message = SAMPLE) -> list[Any]:
    fields = orjson.loads(encode(msg)[1:])
    assert isinstance(fields, list)
    return fields


def raw(fields: Any) -> bytes:
    return b"U" + orjson.dumps(fields)


def malformed(data: Any, secret: bytes | None = None) -> MalformedMessage:
    with pytest.raises(MalformedMessage) as info:
        decode(data, secret)
    assert type(info.value) is MalformedMessage
    return info.value


# ---- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MsgType), ids=lambda k: k.name)
def test_every_message_type_round_trips(kind: MsgType) -> None:
    msg = Message(kind, "n1", "n2", term=4, index=2, entries=SAMPLE.entries, payload="p")
    assert decode(encode(msg)) == msg
    assert decode(encode(msg, SECRET), SECRET) == msg


@given(messages())
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@given(messages(), st.binary(min_size=1, max_size=40))
def test_round_trip_signed(msg: Message, secret: bytes) -> None:
    assert decode(encode(msg, secret), secret) == msg


@given(st.lists(messages(), max_size=6), st.sampled_from([None, b"k"]))
def test_a_batch_encodes_as_its_messages_do(msgs: list[Message], secret: bytes | None) -> None:
    # the same entries to several followers, as a leader sends them
    appends = [Message(MsgType.APPEND, "a", dst, term=2, entries=m.entries)
               for dst in ("b", "c") for m in msgs[:2]]
    batch = [*msgs, *appends]
    assert encode_all(batch, secret) == [(m.dst, encode(m, secret)) for m in batch]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    views: list[Any] = [bytearray(encode(SAMPLE)), memoryview(encode(SAMPLE))]
    assert [decode(v) for v in views] == [SAMPLE, SAMPLE]


# ---- malformed input -------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_garbage_raises_malformed(data: bytes) -> None:
    try:
        decode(data)
    except MalformedMessage as exc:
        assert type(exc) is MalformedMessage


@given(st.binary(max_size=200))
def test_garbage_after_an_envelope_raises_malformed(data: bytes) -> None:
    for tag in (b"U", b"S"):
        try:
            decode(tag + data, SECRET if tag == b"S" else None)
        except MalformedMessage as exc:
            assert type(exc) is MalformedMessage


@given(st.from_type(object).filter(lambda v: not isinstance(v, (bytes, bytearray, memoryview))))
def test_non_bytes_raise_malformed(value: object) -> None:
    malformed(value)


def test_every_truncation_raises_malformed() -> None:
    for data, secret in ((encode(SAMPLE), None), (encode(SAMPLE, SECRET), SECRET)):
        for n in range(len(data)):
            malformed(data[:n], secret)


@pytest.mark.parametrize("data", [b"", b"X[]", b"U", b"Unull", b"U{}", b"U[1,2,3]", b"U[1",
                                  b"U\xff\xfe", b'U"text"'])
def test_not_a_message(data: bytes) -> None:
    malformed(data)


@pytest.mark.parametrize("version", [0, 2, -1, "1", None, [1], 1.0, True])
def test_wrong_version(version: Any) -> None:
    fields = body()
    fields[0] = version
    assert "version" in str(malformed(raw(fields)))


_BAD_FIELDS = [
    (1, 99), (1, "5"), (1, None), (1, 5.0),  # type
    (2, 1), (3, None), (12, 7),  # src, dst, context
    (4, -1), (5, "2"), (6, 1.5), (7, None), (10, True), (11, [1]),  # the integers
    (9, 1), (9, "yes"), (9, None),  # reject
    (8, {}), (8, "entries"), (8, None),  # entries
]


@pytest.mark.parametrize(("field", "value"), _BAD_FIELDS)
def test_bad_field_types(field: int, value: Any) -> None:
    fields = body()
    fields[field] = value
    malformed(raw(fields))


def test_wrong_field_count() -> None:
    malformed(raw(body()[:-1]))
    malformed(raw([*body(), None]))


_GOOD_ENTRY = [3, 8, 0, '{"type":"x"}', "a.1", 4]
_BAD_ENTRIES = [
    [], "entry", None, _GOOD_ENTRY[:5], [*_GOOD_ENTRY, 0],
    [-1, *_GOOD_ENTRY[1:]], ["3", *_GOOD_ENTRY[1:]], [3, None, *_GOOD_ENTRY[2:]],
    [3, 8, 9, *_GOOD_ENTRY[3:]], [3, 8, "0", *_GOOD_ENTRY[3:]],
    [3, 8, 0, 5, "a.1", 4], [3, 8, 0, None, "a.1", 4],
    [3, 8, 0, '"x"', 7, 4], [3, 8, 0, '"x"', "a.1", -4], [3, 8, 0, '"x"', "a.1", 4.0],
]


@pytest.mark.parametrize("entry", _BAD_ENTRIES)
def test_bad_entries(entry: Any) -> None:
    fields = body()
    fields[8] = [_GOOD_ENTRY, entry]
    malformed(raw(fields))


def test_a_good_entry_decodes() -> None:
    fields = body()
    fields[8] = [_GOOD_ENTRY]
    assert decode(raw(fields)).entries == (SAMPLE.entries[0],)


# ---- signatures ------------------------------------------------------------------------


def test_a_bad_signature_is_refused() -> None:
    signed = bytearray(encode(SAMPLE, SECRET))
    assert "signature" in str(malformed(bytes(signed), b"another secret"))
    for i in (1, 20, 40, len(signed) - 1):  # the signature and the body
        tampered = bytearray(signed)
        tampered[i] ^= 1
        malformed(bytes(tampered), SECRET)


def test_an_unsigned_message_is_refused_when_a_secret_is_set() -> None:
    assert "signature" in str(malformed(encode(SAMPLE), SECRET))


def test_a_signed_message_is_refused_without_a_secret() -> None:
    assert "secret" in str(malformed(encode(SAMPLE, SECRET)))


def test_a_missing_signature_is_refused() -> None:
    data = encode(SAMPLE)
    malformed(b"S" + data[1:], SECRET)  # the tag says signed, but no signature follows
    malformed(b"S", SECRET)


def test_the_version_is_checked_inside_the_signature() -> None:
    fields = body()
    fields[0] = VERSION + 1
    payload = orjson.dumps(fields)
    data = b"S" + hmac.new(SECRET, payload, hashlib.sha256).digest() + payload
    assert "version" in str(malformed(data, SECRET))
