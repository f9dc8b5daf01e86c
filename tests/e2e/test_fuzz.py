"""A fuzz run of inbound payloads through the decorated functions (Azurite + the F&O emulator):
malformed JSON, huge and deeply nested documents, wrong types, unicode edge cases and injection
strings. The function never raises to the host, and every payload is processed or parked with a reason."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools import mes
from devtools.schemas import example
from functions import INBOUND
from shared.messages import MES_EVENTS

pytestmark = pytest.mark.e2e

FUNCTIONS = {name: getattr(module, name) for module in INBOUND for name in [module.__name__.rpartition(".")[2]]}
SETTLED = {"forwarded", "duplicate", "parked", "waiting", "retrying"}

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
    st.tuples(st.sampled_from(sorted(FUNCTIONS)), st.binary(max_size=300)),
    st.tuples(st.sampled_from(sorted(FUNCTIONS)), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))),
    st.tuples(st.sampled_from(sorted(FUNCTIONS)), json_values.map(lambda v: json.dumps(v).encode())),
    st.tuples(st.sampled_from(sorted(FUNCTIONS)), st.integers(10, 100_000).map(_nested)),
    st.tuples(st.sampled_from(sorted(FUNCTIONS)), st.integers(100_000, 2_000_000).map(lambda n: b'{"a": "' + b"x" * n + b'"}')),
    mutated_events(),
)


class Outcomes(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "outcome", None) in SETTLED:
            self.records.append(record)


def _message(body: bytes, session: str) -> ServiceBusMessage:
    return ServiceBusMessage(
        body=body,
        message_id=uuid.uuid4().hex,
        session_id=session,
        delivery_count=1,
        enqueued_time_utc=datetime.now(UTC),
        application_properties={},
        user_properties={},
    )


@pytest.fixture
def outcomes():
    handler = Outcomes()
    logger = logging.getLogger("mesbridge")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=payloads)
def test_no_payload_crashes_the_function_and_each_is_processed_or_parked_with_a_reason(stack, outcomes, payload):
    flow, body = payload
    outcomes.records.clear()
    FUNCTIONS[flow](_message(body, "fuzz"))  # an exception here would reach the host: the test fails
    assert len(outcomes.records) == 1, [r.getMessage() for r in outcomes.records]
    record = outcomes.records[0]
    if record.outcome == "parked":
        assert getattr(record, "reason", ""), record.getMessage()


def test_a_mutated_document_that_is_still_valid_is_forwarded(stack, outcomes):
    """The fuzzer's valid end: an untouched example goes through (so the property above is not vacuous)."""
    document = mes.event("production_started", "P000031", {}, message_id=f"fuzz-{uuid.uuid4().hex[:8]}")
    FUNCTIONS["production_started"](_message(mes.encode(document), "P000031"))
    assert [r.outcome for r in outcomes.records] == ["forwarded"]
