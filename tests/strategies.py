"""Hypothesis strategies shared by the core, log and codec tests."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from conflux_raft import Entry, EntryKind, Message, MsgType

# Text that orjson can encode (no lone surrogates).
text = st.text(st.characters(codec="utf-8"), max_size=12)
uints = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=50)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | text
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=10,
)
json_bytes = json_values.map(orjson.dumps)


@st.composite
def entries(draw: st.DrawFn, index: int | None = None) -> Entry:
    return Entry(
        term=draw(uints),
        index=draw(uints) if index is None else index,
        data=draw(json_bytes),
        kind=draw(st.sampled_from(EntryKind)),
        client=draw(text),
        seq=draw(uints),
    )


@st.composite
def messages(draw: st.DrawFn, kind: MsgType | None = None) -> Message:
    return Message(
        type=draw(st.sampled_from(MsgType)) if kind is None else kind,
        src=draw(text),
        dst=draw(text),
        term=draw(uints),
        log_term=draw(uints),
        index=draw(uints),
        commit=draw(uints),
        entries=tuple(draw(st.lists(entries(), max_size=3))),
        reject=draw(st.booleans()),
        hint=draw(uints),
        hint_term=draw(uints),
        context=draw(text),
        payload=draw(json_values),
    )


@st.composite
def logs(draw: st.DrawFn, max_size: int = 30, max_term: int = 6) -> list[Entry]:
    """A well-formed log: indexes 1..n, terms never decreasing."""
    steps = draw(st.lists(st.integers(0, 2), max_size=max_size))
    term, out = 1, []
    for i, step in enumerate(steps, start=1):
        term = min(term + step, max_term)
        out.append(Entry(term, i, b"%d" % i))
    return out
