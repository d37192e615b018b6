"""Which JSON documents the event store sends to PostgreSQL for their stored form before hashing: only
those with a number PostgreSQL prints differently (an exponent, -0.0), never for digits inside a string
(a traceparent or a hash in hex matched before and cost every traced command a round trip)."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from infrastructure.eventlog.stored_form import may_be_rewritten

QUICK = (b"e", b"E")


def _number_rewritten(value: float) -> bool:
    text = msgspec.json.encode(value)
    return any(c in text for c in QUICK) or text.startswith(b"-0.0")


def _has_rewritten_number(value: object) -> bool:
    if isinstance(value, float):
        return _number_rewritten(value)
    if isinstance(value, dict):
        return any(_has_rewritten_number(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_rewritten_number(v) for v in value)
    return False


def test_hex_in_strings_is_not_a_number() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert not may_be_rewritten(msgspec.json.encode({"traceparent": traceparent, "9e9": "1E5", "x": "-0.0"}))
    assert not may_be_rewritten(msgspec.json.encode({"quoted": 'say "1e5"\\', "n": [1.5, -2, 0.0]}))


def test_numbers_with_exponents_and_negative_zero_are() -> None:
    assert may_be_rewritten(msgspec.json.encode({"n": 1e300}))
    assert may_be_rewritten(msgspec.json.encode({"n": -0.0}))
    assert may_be_rewritten(msgspec.json.encode({"s": 'ends in a backslash\\', "n": [1e-7]}))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_matches_exactly_the_documents_with_such_a_number(value: dict) -> None:  # payloads and metadata are objects
    assert may_be_rewritten(msgspec.json.encode(value)) == _has_rewritten_number(value)
