"""Hypothesis strategies for hostile event values: random bytes, odd JSON, broken events."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from pipelines.fraud.generator import FraudGenerator

_BASE = [
    json.loads(e.value)
    for e in FraudGenerator(77).batch(50, 1_795_000_000_000)
    if e.invalid_kind is None
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def mutated_event(draw: st.DrawFn) -> bytes:
    """A real event with one field replaced, removed, or one added."""
    event = dict(draw(st.sampled_from(_BASE)))
    field = draw(st.sampled_from(sorted(event)))
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        event[field] = draw(json_values)
    elif action == "delete":
        del event[field]
    else:
        event[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return json.dumps(event, allow_nan=True).encode("utf-8", "surrogatepass")


deep_json = st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n)
hostile_values = st.one_of(
    st.binary(max_size=400),
    json_values.map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
    mutated_event(),
    deep_json,
    st.sampled_from([json.dumps(e).encode() for e in _BASE]),  # some valid ones too
)
