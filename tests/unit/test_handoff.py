"""The in-memory handoff (shared/inbound/handoff.py): an early message whose predecessor this process
is handling right now waits for that delivery to end instead of writing a wait to the ledger."""

from __future__ import annotations

import threading
import time
from typing import Any

from shared.fo.production_order import HEADERS
from shared.inbound.attempt import Outcome, Result
from shared.inbound.handoff import Handoff
from shared.store.ledger import State
from tests.fakes import FakeBridge, fake_bridge
from tests.unit.test_pipeline import ORDER, deliver, message, row, start


def bridge(**settings: str) -> FakeBridge:
    """The fakes with the order released in F&O and started (sequence 1 forwarded)."""
    released = {HEADERS: [{"dataAreaId": "usmf", "ProductionOrderNumber": ORDER, "ProductionOrderStatus": "Released"}]}
    made = fake_bridge(fo_rows=released, **settings)
    start(made)
    return made


def test_nothing_running_means_no_wait():
    began = time.monotonic()
    assert Handoff().wait_for("USMF", ORDER, 1, time.monotonic() + 5) is False
    assert time.monotonic() - began < 1


def test_a_delivery_without_order_or_sequence_is_not_tracked():
    handoff = Handoff()
    with handoff.handling("USMF", "", 1), handoff.handling("USMF", ORDER, None):
        assert handoff.wait_for("USMF", "", 1, time.monotonic() + 5) is False


def test_the_wait_ends_when_every_delivery_of_the_predecessor_ended():
    handoff, ended = Handoff(), threading.Event()
    first_done, second_done = threading.Event(), threading.Event()

    def run(done: threading.Event) -> None:
        with handoff.handling("USMF", ORDER, 1):
            done.wait(5)

    threads = [threading.Thread(target=run, args=(e,)) for e in (first_done, second_done)]
    for t in threads:
        t.start()
    while True:  # both deliveries of sequence 1 (the MES's and a copy) are running
        with handoff._changed:
            if handoff._running[("USMF", ORDER, 1)] == 2:
                break
        time.sleep(0.001)

    def waiter() -> None:
        assert handoff.wait_for("USMF", ORDER, 1, time.monotonic() + 5) is True
        ended.set()

    waiting = threading.Thread(target=waiter)
    waiting.start()
    first_done.set()
    threads[0].join()
    assert not ended.wait(0.05), "one delivery of sequence 1 still runs"
    second_done.set()
    waiting.join(5)
    assert ended.is_set()
    for t in threads:
        t.join()


def test_a_predecessor_slower_than_the_deadline_gives_up():
    handoff, release = Handoff(), threading.Event()

    def run() -> None:
        with handoff.handling("USMF", ORDER, 1):
            release.wait(5)

    runner = threading.Thread(target=run)
    runner.start()
    while ("USMF", ORDER, 1) not in handoff._running:
        time.sleep(0.001)
    assert handoff.wait_for("USMF", ORDER, 1, time.monotonic() + 0.05) is False
    release.set()
    runner.join()


# --- through the pipeline ------------------------------------------------------------------------


def _predecessor_in_fo(bridge: FakeBridge) -> tuple[threading.Thread, threading.Event, list[Result]]:
    """Sequence 2 of the order delivered in a thread and held inside its F&O call until released."""
    inside, release, results = threading.Event(), threading.Event(), []
    send = bridge.fo.send_message

    def held_send(*args: Any, **kwargs: Any) -> None:
        inside.set()
        release.wait(5)
        send(*args, **kwargs)

    bridge.fo.send_message = held_send  # type: ignore[method-assign]
    runner = threading.Thread(
        target=lambda: results.append(deliver(bridge, "material_consumed", message("material_consumed", "m-2", sequence=2)))
    )
    runner.start()
    assert inside.wait(5)
    return runner, release, results


def test_a_successor_waits_in_memory_for_its_predecessor_in_flight_here_and_writes_no_wait():
    fakes = bridge()
    runner, release, first = _predecessor_in_fo(fakes)
    handoff, asked = fakes.ports.handoff, threading.Event()
    wait_for = handoff.wait_for

    def waiting(*args: Any) -> bool:
        with handoff._changed:  # the predecessor cannot end before this waits (the lock is the condition's)
            asked.set()
            return wait_for(*args)

    handoff.wait_for = waiting  # type: ignore[method-assign,assignment]
    second: list[Result] = []
    successor = threading.Thread(
        target=lambda: second.append(deliver(fakes, "material_consumed", message("material_consumed", "m-3", sequence=3)))
    )
    successor.start()
    assert asked.wait(5)
    release.set()
    runner.join(5)
    successor.join(5)
    assert first[0].outcome is Outcome.FORWARDED and second[0].outcome is Outcome.FORWARDED
    assert len(fakes.fo.applied) == 3 and fakes.gate.read("USMF", ORDER).watermark == 3
    # No wait was written: no look-again copy on the queue, the row went straight to F&O.
    assert fakes.requeue.scheduled == [] and row(fakes, "m-3").attempts == 1


def test_with_no_handoff_wait_the_successor_waits_in_the_ledger():
    fakes = bridge(GATE_HANDOFF_WAIT_S="0")
    runner, release, first = _predecessor_in_fo(fakes)
    second = deliver(fakes, "material_consumed", message("material_consumed", "m-3", sequence=3))
    assert second.outcome is Outcome.WAITING and row(fakes, "m-3").state is State.WAITING
    release.set()
    runner.join(5)
    assert first[0].outcome is Outcome.FORWARDED
    # The predecessor's forward wakes it: a copy at once, as without any handoff.
    assert [c.delay_s for c in fakes.requeue.scheduled if c.message_id.startswith("m-3|wake-")] == [0]


def test_a_successor_whose_predecessor_runs_elsewhere_waits_in_the_ledger_at_once():
    fakes = bridge()
    began = time.monotonic()
    result = deliver(fakes, "material_consumed", message("material_consumed", "m-3", sequence=3))
    assert result.outcome is Outcome.WAITING and time.monotonic() - began < 1


def test_while_f_and_o_s_budget_holds_the_bridge_back_the_successor_waits_in_the_ledger_to_be_taken_along():
    fakes = bridge()
    runner, release, first = _predecessor_in_fo(fakes)
    fakes.fo.budget_wait = 2.0  # F&O's budget is spent: a merged F&O message is worth the wait's operations
    began = time.monotonic()
    second = deliver(fakes, "material_consumed", message("material_consumed", "m-3", sequence=3))
    assert second.outcome is Outcome.WAITING and row(fakes, "m-3").state is State.WAITING
    assert time.monotonic() - began < 1
    release.set()
    runner.join(5)
    assert first[0].outcome is Outcome.FORWARDED
