import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests

from devtools.fo_emulator.server import Throttle, ThrottleBucket
from shared.errors import AuthError, BusinessRejection, NotFound, Throttled, Transient
from shared.fo.client import Pacer, classify, parse_batch_response, parse_retry_after


def response(status, body=None, headers=None, text=None):
    r = requests.Response()
    r.status_code = status
    r._content = (text if text is not None else json.dumps(body) if body is not None else "").encode()
    r.headers.update(headers or {})
    r.url = "https://fo.example/data/Things"
    return r


ODATA_WRITE = {
    "error": {
        "code": "",
        "message": "An error has occurred.",
        "innererror": {
            "message": "Write failed for table row of type 'X'. Infolog: The record already exists.",
            "type": "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException",
        },
    }
}


@pytest.mark.parametrize("status", [200, 201, 204])
def test_success_is_no_error(status):
    assert classify(response(status), fallback_wait=30) is None


def test_429_is_throttled_with_the_wait_it_asked_for():
    error = classify(response(429, {"Message": "busy"}, {"Retry-After": "7"}), fallback_wait=30)
    assert isinstance(error, Throttled)
    assert error.retry_after == 7


def test_429_without_retry_after_uses_the_fallback():
    error = classify(response(429), fallback_wait=30)
    assert isinstance(error, Throttled) and error.retry_after == 30


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_unavailable_is_transient(status):
    error = classify(response(status, {"Message": "down"}), fallback_wait=30)
    assert isinstance(error, Transient) and not isinstance(error, Throttled)


def test_500_with_a_write_exception_is_a_business_rejection_carrying_the_infolog():
    error = classify(response(500, ODATA_WRITE), fallback_wait=30)
    assert isinstance(error, BusinessRejection)
    assert "The record already exists" in error.infolog


@pytest.mark.parametrize("status", [400, 409, 412, 422])
def test_client_errors_are_business_rejections(status):
    error = classify(response(status, ODATA_WRITE), fallback_wait=30)
    assert isinstance(error, BusinessRejection)
    assert "record already exists" in error.message


def test_custom_service_error_shape_is_read():
    body = {"Message": "Infolog: Field X must be filled in.", "ExceptionType": "XppServicesException"}
    error = classify(response(400, body), fallback_wait=30)
    assert isinstance(error, BusinessRejection) and "Field X" in error.infolog


def test_plain_text_error_is_kept():
    error = classify(response(400, text="Bad things"), fallback_wait=30)
    assert isinstance(error, BusinessRejection) and "Bad things" in error.message


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_point_to_the_entra_registration(status):
    error = classify(response(status, {"Message": "denied"}), fallback_wait=30, client_id="abc")
    assert isinstance(error, AuthError)
    assert "Microsoft Entra ID applications" in error.message and "abc" in error.message


def test_404_is_not_found():
    assert isinstance(classify(response(404, {"Message": "nope"}), fallback_wait=30), NotFound)


def test_retry_after_forms():
    now = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2", 30) == 2
    assert parse_retry_after("1.5", 30) == 1.5
    assert parse_retry_after("Sun, 22 Nov 2026 12:00:09 GMT", 30, now=now) == 9
    assert parse_retry_after("Sun, 22 Nov 2026 11:00:00 GMT", 30, now=now) == 0
    assert parse_retry_after("garbage", 30) == 30
    assert parse_retry_after(None, 12) == 12
    assert parse_retry_after("-5", 30) == 0


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_a_429_makes_every_caller_wait_out_the_pause():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.throttled(2, sent_at=clock.now)
    pacer.acquire(deadline=clock.now + 10)
    assert clock.slept == [2]


def test_the_longest_pause_wins():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.throttled(5, sent_at=clock.now)
    pacer.throttled(1, sent_at=clock.now)
    pacer.acquire(deadline=clock.now + 10)
    assert sum(clock.slept) == 5


def test_no_slot_before_the_deadline_raises_throttled():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    pacer.throttled(60, sent_at=clock.now)
    with pytest.raises(Throttled) as caught:
        pacer.acquire(deadline=clock.now + 10)
    assert caught.value.retry_after == pytest.approx(60)
    assert clock.slept == []


def test_without_a_budget_the_rate_doubles_each_second_callers_queue_until_a_429():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, start_rps=4)
    begin = clock.now
    while clock.now < begin + 3:
        pacer.acquire(deadline=clock.now + 10)
    assert pacer.slow_start and 24 < pacer.rate < 40  # 4 -> 8 -> 16 -> 32 per second


def test_a_budget_spreads_calls_evenly_instead_of_bunching_them():
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    slots = [pacer.acquire(deadline=clock.now + 60) for _ in range(21)]
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert all(gap == pytest.approx(0.1) for gap in gaps)  # at the ceiling: no probing above the budget
    assert slots[-1] - slots[0] == pytest.approx(2.0)


def test_the_wait_a_call_would_have_is_told_without_taking_a_slot():
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    assert pacer.wait_s() == 0  # a slot at once: nothing queues
    for _ in range(5):
        pacer.acquire(deadline=clock.now + 60)
    assert pacer.wait_s() == pytest.approx(0.1)  # the next slot, a tenth of a second on
    assert pacer.wait_s() == pytest.approx(0.1)  # asking took none
    pacer.throttled(3, sent_at=clock.now)
    assert pacer.wait_s() == pytest.approx(3)  # F&O's pause holds every caller


def test_the_first_429_cuts_what_was_sent_and_spreads_the_callers_after_the_pause():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep, start_rps=1000, decrease=0.5)
    for n in range(60):  # 60 calls within the last second, far below the rate, 40 of them served
        sent_at = pacer.acquire(deadline=clock.now + 10)
        if n % 3:
            pacer.accepted(sent_at)
        clock.now += 0.015
    pacer.throttled(1, sent_at=clock.now - 0.01)
    assert not pacer.slow_start
    assert pacer.rate == pytest.approx(40 * 0.5)  # what was served in the last second, halved
    resumed = clock.now + 1
    slots = [pacer.acquire(deadline=clock.now + 60) for _ in range(5)]
    assert slots[0] == pytest.approx(resumed)
    assert all(b - a == pytest.approx(1 / 20, rel=0.05) for a, b in itertools.pairwise(slots))


def test_answers_to_calls_already_in_flight_cut_the_rate_once():
    clock = FakeClock()
    pacer = Pacer(20, clock=clock, sleep=clock.sleep, decrease=0.5)
    sent = [pacer.acquire(deadline=clock.now + 10) for _ in range(4)]
    for at in sent:
        pacer.throttled(1, sent_at=at)
    assert pacer.rate == pytest.approx(10)
    later = pacer.acquire(deadline=clock.now + 10)
    pacer.throttled(1, sent_at=later)
    assert pacer.rate == pytest.approx(5)


def test_the_rate_grows_back_while_callers_queue_but_never_past_the_budget():
    clock = FakeClock()
    pacer = Pacer(20, clock=clock, sleep=clock.sleep, increase=0.05, decrease=0.5)
    pacer.throttled(0, sent_at=pacer.acquire(deadline=clock.now + 10))
    assert pacer.rate == pytest.approx(10)
    for _ in range(50):
        pacer.acquire(deadline=clock.now + 60)
    assert 10 < pacer.rate < 20
    for _ in range(1000):
        pacer.acquire(deadline=clock.now + 60)
    assert pacer.rate == 20


def test_batch_response_reports_each_inner_status():
    body = (
        "--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n"
        "--c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 1\r\n\r\n"
        'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n\r\n{"a": 1}\r\n'
        "--c\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\nContent-ID: 2\r\n\r\n"
        'HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\r\n{"error": {"message": "x"}}\r\n'
        "--c--\r\n--b--\r\n"
    )
    results = parse_batch_response("multipart/mixed; boundary=b", body.encode())
    assert [(r.status, r.content_id) for r in results] == [(201, "1"), (500, "2")]
    assert results[0].body == {"a": 1}


def run_against_a_budget(pacer: Pacer, clock: FakeClock, budget: Callable[[float], float], until: float) -> list[float]:
    """One caller that always has work, against the emulator's F&O throttling (`budget(t)` requests/s,
    a burst of a fifth of a second, a whole-second Retry-After) on simulated time: the times of the
    calls F&O admitted."""
    bucket, admitted = ThrottleBucket(Throttle(budget(clock.now), burst=budget(clock.now) / 5), clock=clock), []
    while clock.now < until:
        sent = pacer.acquire(deadline=clock.now + 600)
        bucket.throttle = Throttle(budget(sent), burst=budget(sent) / 5)
        ok, retry_after, _ = bucket.admit()
        if ok:
            bucket.release()
            admitted.append(sent)
            pacer.accepted(sent)
        else:
            pacer.throttled(float(retry_after), sent_at=sent)
    return admitted


def test_a_probe_that_finds_the_budget_where_it_was_keeps_the_rate_and_comes_less_often():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    begin = clock.now
    admitted = run_against_a_budget(pacer, clock, lambda t: 20.0, until=begin + 600)
    used = len([t for t in admitted if t >= begin + 5]) / (20 * 595)
    # A probe's 429 once cut the rate to what the probe itself had sent (about 5 req/s): 64 % used.
    assert used >= 0.9, used
    assert pacer.probe_interval_s >= 80  # each probe found 20 req/s again: the next came later


def test_after_a_storm_the_pacer_looks_for_the_budget_s_return_at_the_shortest_interval():
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    begin = clock.now
    storm = (begin + 400, begin + 420)

    def budget(t: float) -> float:
        return 3.0 if storm[0] <= t < storm[1] else 20.0

    run_against_a_budget(pacer, clock, budget, until=storm[0] - 1)
    assert pacer.probe_interval_s >= 80  # a steady budget: probes had grown rare
    run_against_a_budget(pacer, clock, budget, until=storm[1])
    assert pacer.rate < 5 and pacer.probe_interval_s == 20
    admitted = run_against_a_budget(pacer, clock, budget, until=storm[1] + 60)
    assert len([t for t in admitted if t >= storm[1] + 30]) >= 0.85 * 20 * 30  # back at the budget within 30 s


def test_the_whole_budget_caps_a_learning_pacer_without_fixing_its_rate():
    clock = FakeClock()
    pacer = Pacer(ceiling_rps=20, clock=clock, sleep=clock.sleep, start_rps=4)
    assert pacer.slow_start and pacer.rate == 4  # learns from below, as without a budget
    begin = clock.now
    while clock.now < begin + 10:
        pacer.acquire(deadline=clock.now + 10)
    assert pacer.rate == 20  # doubled 4 -> 8 -> 16, then held at F&O's whole budget
    pacer.throttled(1, sent_at=clock.now)
    assert pacer.rate < 20  # another instance's share: a 429 still cuts it


def test_a_ceiling_below_the_start_rate_starts_at_the_ceiling():
    clock = FakeClock()
    assert Pacer(ceiling_rps=2, clock=clock, sleep=clock.sleep).rate == 2


class _Scripted:
    """A session whose answers are scripted: F&O as the client sees it, with no network."""

    def __init__(self, clock, statuses):
        self.clock, self.statuses, self.sent = clock, list(statuses), []

    def request(self, method, url, **kwargs):
        self.sent.append(self.clock.now)
        status = self.statuses.pop(0) if self.statuses else 200
        return response(status, {"Message": "busy" if status == 429 else "down"}, {"Retry-After": "1"} if status == 429 else {})


class _Tokens:
    def token(self):
        return "t"

    def invalidate(self):
        pass


def test_a_429_during_an_outage_cuts_the_rate_to_what_f_and_o_answered_not_to_the_floor():
    """A call F&O answered 503 got past its throttling: it counts as admitted. Counting
    only successes, the first 429 of an outage cut a learning pacer to its 0.2 req/s floor, and the
    bridge then crept for 20 s after F&O came back (the backlog bench: one send every 5 s)."""
    from shared.fo.client import FoClient
    from tests.fakes import unit_settings

    clock = FakeClock()
    settings = unit_settings(FO_CALL_DEADLINE_S="60", FO_BACKOFF_BASE_S="0.01", FO_BACKOFF_MAX_S="0.01")
    pacer = Pacer(clock=clock, sleep=clock.sleep, start_rps=16)
    session = _Scripted(clock, [503] * 40 + [429])
    client = FoClient(settings, _Tokens(), session, pacer=pacer, sleep=clock.sleep)  # type: ignore[arg-type]  # only .request is used
    client.send_message("usmf", "ProdProductionOrderStart", {"ProductionOrderNumber": "P1"})
    throttled_at = session.sent[40]  # the 429; the call then went again after the pause
    served_in_last_second = sum(1 for at in session.sent[:40] if at >= throttled_at - 1.0)
    assert served_in_last_second > 10
    assert pacer.rate == pytest.approx(served_in_last_second * 0.9)
