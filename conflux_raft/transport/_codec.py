"""The wire format: one orjson array per message, versioned, optionally HMAC-signed.

Layout: b"U" + body, or b"S" + HMAC-SHA256(secret, body) + body, where body is
``[VERSION, type, src, dst, term, log_term, index, commit, entries, reject, hint,
hint_term, context, payload]`` and each entry is ``[term, index, kind, data, client, seq]``
with `data` carried as a JSON string (it is already JSON text).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import orjson

from .._errors import MalformedMessage
from ..core import Entry, EntryKind, Message, MsgType

VERSION = 1
_SIG_LEN = 32
_FIELDS = 14
_MSG_TYPES = {int(t): t for t in MsgType}
_KINDS = {int(k): k for k in EntryKind}


def encode(msg: Message, secret: bytes | None = None) -> bytes:
    """Encode `msg`; sign it when a secret is given."""
    return _encode(msg, secret, _entries(msg.entries))


def encode_all(msgs: Sequence[Message], secret: bytes | None = None) -> list[tuple[str, bytes]]:
    """(destination, encoding) of each message. The entries that several appends carry
    (the same entries from the log to each follower) are encoded once."""
    shared: dict[tuple[int, int, int], tuple[tuple[Entry, ...], orjson.Fragment]] = {}
    out = []
    for m in msgs:
        ents = m.entries
        if m.type is MsgType.APPEND and ents:
            key = (ents[0].index, ents[-1].index, len(ents))
            seen = shared.get(key)
            if seen is not None and seen[0] == ents:  # the same objects: compared by identity
                fragment = seen[1]
            else:
                fragment = _entries(ents)
                shared[key] = (ents, fragment)
        else:
            fragment = _entries(ents)
        out.append((m.dst, _encode(m, secret, fragment)))
    return out


def _entries(entries: Sequence[Entry]) -> orjson.Fragment:
    return orjson.Fragment(orjson.dumps(
        [[e.term, e.index, int(e.kind), e.data.decode(), e.client, e.seq] for e in entries]))


def _encode(msg: Message, secret: bytes | None, entries: orjson.Fragment) -> bytes:
    body = orjson.dumps(
        [
            VERSION,
            int(msg.type),
            msg.src,
            msg.dst,
            msg.term,
            msg.log_term,
            msg.index,
            msg.commit,
            entries,
            msg.reject,
            msg.hint,
            msg.hint_term,
            msg.context,
            msg.payload,
        ]
    )
    if secret is None:
        return b"U" + body
    return b"S" + hmac.new(secret, body, hashlib.sha256).digest() + body


def decode(raw: bytes, secret: bytes | None = None) -> Message:
    """Decode and validate `raw`; raise MalformedMessage for anything but a valid message."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MalformedMessage(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    tag, rest = raw[:1], raw[1:]
    if tag == b"S":
        if secret is None:
            raise MalformedMessage("signed message, but this node has no secret")
        sig, body = rest[:_SIG_LEN], rest[_SIG_LEN:]
        if not hmac.compare_digest(sig, hmac.new(secret, body, hashlib.sha256).digest()):
            raise MalformedMessage("bad signature")
    elif tag == b"U":
        if secret is not None:
            raise MalformedMessage("unsigned message, but this node requires a signature")
        body = rest
    else:
        raise MalformedMessage("unknown envelope")
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON: {exc}") from None
    if not isinstance(fields, list) or len(fields) != _FIELDS:
        raise MalformedMessage("not a message array")
    if type(fields[0]) is not int or fields[0] != VERSION:
        raise MalformedMessage(f"unsupported version {fields[0]!r}")
    (_, mtype, src, dst, term, log_term, index, commit, entries, reject, hint, hint_term,
     context, payload) = fields
    msg_type = _MSG_TYPES.get(mtype) if type(mtype) is int else None
    if msg_type is None:
        raise MalformedMessage(f"unknown message type {mtype!r}")
    if not (type(src) is str and type(dst) is str and type(context) is str):
        raise MalformedMessage("src, dst and context must be strings")
    _check_uints(term, log_term, index, commit, hint, hint_term)
    if type(reject) is not bool:
        raise MalformedMessage("reject must be a boolean")
    if not isinstance(entries, list):
        raise MalformedMessage("entries must be an array")
    return Message(
        type=msg_type,
        src=src,
        dst=dst,
        term=term,
        log_term=log_term,
        index=index,
        commit=commit,
        entries=tuple(_entry(e) for e in entries),
        reject=reject,
        hint=hint,
        hint_term=hint_term,
        context=context,
        payload=payload,
    )


def _entry(fields: Any) -> Entry:
    if not isinstance(fields, list) or len(fields) != 6:
        raise MalformedMessage("an entry must be an array of 6")
    term, index, kind, data, client, seq = fields
    _check_uints(term, index, seq)
    entry_kind = _KINDS.get(kind) if type(kind) is int else None
    if entry_kind is None:
        raise MalformedMessage(f"unknown entry kind {kind!r}")
    if type(data) is not str or type(client) is not str:
        raise MalformedMessage("entry data and client must be strings")
    return Entry(term, index, data.encode(), entry_kind, client, seq)


def _check_uints(*values: Any) -> None:
    for v in values:
        if type(v) is not int or v < 0:
            raise MalformedMessage(f"expected a non-negative integer, got {v!r}")
