"""A fuzz run of inbound payloads (tests/payloads.py) through the decorated functions (Azurite + the
F&O emulator): the function never raises to the host, and every payload is processed or parked with
a reason, its ledger row written whatever its id and company say. What the decoding alone decides
is fuzzed far more widely, without Azurite, in tests/unit/test_decode_fuzz.py."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

import pytest
from azure.functions.servicebus import ServiceBusMessage
from hypothesis import HealthCheck, given, settings

from devtools import mes
from functions import INBOUND
from tests.payloads import FLOW_NAMES, payloads

pytestmark = pytest.mark.e2e

FUNCTIONS = {name: getattr(module, name) for module in INBOUND for name in [module.__name__.rpartition(".")[2]]}
SETTLED = {"forwarded", "duplicate", "parked", "waiting", "retrying"}
assert sorted(FUNCTIONS) == FLOW_NAMES, "every inbound function is fuzzed under its flow's name"


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


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
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
