"""Hostile inbound payloads for the fuzz tests: malformed JSON, huge and deeply nested documents,
wrong types, unicode edge cases, injection strings, and valid MES documents with parts replaced.
tests/unit/test_decode_fuzz.py runs them through the pure decode in bulk; tests/e2e/test_fuzz.py
runs fewer through the functions, the ledger and the F&O emulator."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import strategies as st

from devtools.schemas import example
from shared.inbound.messages import MES_EVENTS
from shared.topology import INBOUND_QUEUES

FLOW_NAMES = sorted(INBOUND_QUEUES)

NASTY_TEXT = [
    "' or 1 eq 1 or '",
    "*",
    "%27",
    "../../etc/passwd",
    "P000001') or (ProductionOrderNumber ne '",
    "\u202eevil",
    "\ufeff",
    "\u0000",
    "ﬁ",
    "😀" * 30,
    "a" * 5000,
    "\ud800",  # a lone surrogate: valid JSON text, not valid UTF-8
    "<script>alert(1)</script>",
    "${jndi:ldap://x}",
]

leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(NASTY_TEXT),
)
json_values = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=30
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _replace(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = json.loads(json.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


@st.composite
def mutated_events(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(MES_EVENTS)))
    document = example(kind)
    document["message_id"] = f"fuzz-{uuid.uuid4().hex[:12]}"
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        document = _replace(document, path, draw(json_values))
    return kind, json.dumps(document).encode()


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


payloads = st.one_of(
    st.tuples(st.sampled_from(FLOW_NAMES), st.binary(max_size=300)),
    st.tuples(st.sampled_from(FLOW_NAMES), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.sampled_from(FLOW_NAMES), json_values.map(lambda v: json.dumps(v).encode())),
    st.tuples(st.sampled_from(FLOW_NAMES), st.integers(10, 100_000).map(_nested)),
    st.tuples(st.sampled_from(FLOW_NAMES), st.integers(100_000, 2_000_000).map(lambda n: b'{"a": "' + b"x" * n + b'"}')),
    mutated_events(),
)
