"""`storage_call`: storage errors sorted into transient and not, and each delivery's time in storage."""

import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ServiceRequestError

from shared.errors import Transient
from shared.store.tables import TABLE_OPS, storage_call, timing_storage


def _refused(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"HTTP {status}")
    error.status_code = status
    return error


@pytest.mark.parametrize("error", [ServiceRequestError("refused"), _refused(503), _refused(429), _refused(408)])
def test_network_faults_and_busy_answers_are_transient(error):
    with pytest.raises(Transient, match="during ledger read"), storage_call("ledger read"):
        raise error


@pytest.mark.parametrize("error", [ResourceExistsError("exists"), _refused(400)])
def test_what_the_caller_decides_on_passes_through(error):
    with pytest.raises(type(error)), storage_call("ledger create"):
        raise error


def test_each_call_is_counted():
    before = TABLE_OPS.count
    with storage_call("one"), storage_call("two"):
        pass
    assert TABLE_OPS.count - before == 2


def test_the_time_in_storage_calls_adds_up_within_the_block_only():
    with storage_call("before the block"):
        time.sleep(0.2)
    with timing_storage() as spent:
        assert spent.ms == 0.0
        with storage_call("first"):
            time.sleep(0.01)
        time.sleep(0.2)  # between calls: not storage time
        with pytest.raises(Transient), storage_call("second"):
            time.sleep(0.01)
            raise ServiceRequestError("reset")  # a failed call took its time all the same
    with storage_call("after the block"):
        time.sleep(0.2)
    assert 20 <= spent.ms < 200


def test_blocks_nest_and_restore_the_outer_one():
    with timing_storage() as outer:
        with timing_storage() as inner, storage_call("inner"):
            time.sleep(0.2)
        with storage_call("outer"):
            time.sleep(0.01)
    assert inner.ms >= 200
    assert 10 <= outer.ms < 200  # the inner block's call is its own
