"""The chaos run (devtools/chaos.py): each fault alone on a short shift, then all of them together
on the default shift of 5,000 events. Nothing may be lost, nothing doubled, the genealogy complete,
in F&O and in what MES receives (work orders, outcomes, status changes)."""

from __future__ import annotations

import io
import json

import pytest

from devtools import chaos
from shared.topology import MES_TOPIC

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


def _run(tmp_path, *argv: str) -> tuple[chaos.ChaosReport, str]:
    out = io.StringIO()
    args = chaos.build_parser().parse_args(["--log", str(tmp_path / "chaos.log"), "--timeout", "500", *argv])
    return chaos.execute(args, out), out.getvalue()


def _assert_clean(report: chaos.ChaosReport, printed: str) -> None:
    verdict = report.verdict
    assert verdict is not None, printed
    assert verdict.lost == [], printed
    assert verdict.doubled == [], printed
    assert verdict.problems == [], printed
    assert verdict.genealogy_missing == [], printed
    assert report.exit_code == 0, printed
    assert "F&O side: lost = 0, doubled = 0" in printed
    assert verdict.mes.lost == [] and verdict.mes.doubled == [] and verdict.mes.outcomes_wrong == [], printed
    assert verdict.mes.released > 0 and verdict.mes.final_in_fo > 0, printed  # the MES side was counted
    assert "MES side: lost = 0, doubled = 0, wrong outcome = 0" in printed


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", chaos.FAULTS)
def test_each_fault_alone_loses_nothing_and_doubles_nothing(tmp_path, kind):
    report, printed = _run(tmp_path, "--events", "160", "--faults", kind, "--intensity", "8", "--rate", "60")
    assert report.injected.get(kind, 0) > 0, f"{kind} never happened:\n{printed}"  # else the run proves nothing
    _assert_clean(report, printed)


@pytest.mark.timeout(2400)
def test_every_fault_together_on_a_shift_of_5000_events(tmp_path):
    report, printed = _run(tmp_path, "--timeout", "1500")  # the default run: the one in the README
    print(printed)  # the figures, for the CI log
    assert set(report.injected) == set(chaos.FAULTS)
    assert all(n > 0 for n in report.injected.values()), report.injected
    _assert_clean(report, printed)
    assert report.resolution is not None


def test_the_check_sees_a_doubled_quantity(tmp_path, monkeypatch):
    """The verdict is not a formality: a message F&O received twice behind the bridge's back is caught."""
    real = chaos._verdict

    def doubled_behind_the_bridge(shift, emulator, ports, entries):
        # One line: one MES event's message for certain (a merged message carries two or more events' lines).
        first = next(
            m
            for m in emulator.app.messages
            if m.message_type == "ProdProductionOrderPickingList" and len(json.loads(m.content)["PickingListLines"]) == 1
        )
        emulator.app.send_message(
            {
                "_companyId": first.company,
                "_messageQueue": first.queue,
                "_messageType": first.message_type,
                "_messageContent": first.content,
            },
            emulator.companies,
        )
        assert emulator.wait_idle(10)
        return real(shift, emulator, ports, entries)

    monkeypatch.setattr(chaos, "_verdict", doubled_behind_the_bridge)
    report, printed = _run(tmp_path, "--events", "60", "--faults", "fo_5xx")
    assert report.exit_code == 1
    assert report.verdict is not None and len(report.verdict.doubled) == 1, printed
    assert "CHAOS CHECK FAILED" in printed


def test_the_check_sees_a_work_order_mes_never_got_and_an_outcome_it_got_twice(tmp_path, monkeypatch):
    """The MES side of the verdict is not a formality either: a work order lost on the way to MES
    and an outcome MES received twice (under two MessageIds) are both caught."""
    real = chaos._mes_verdict

    def lost_and_doubled_behind_the_bridge(shift, emulator, broker, entries, outcomes):
        topic = broker.queue(MES_TOPIC)
        work_order = next(m for m in topic.active if json.loads(m.body)["type"] == "work_order")
        topic.active.remove(work_order)
        outcome = next(m for m in topic.active if json.loads(m.body)["type"] == "message_outcome")
        broker.send(MES_TOPIC, outcome.body, message_id=outcome.message_id + "|again", session_id=outcome.session_id)
        return real(shift, emulator, broker, entries, outcomes)

    monkeypatch.setattr(chaos, "_mes_verdict", lost_and_doubled_behind_the_bridge)
    report, printed = _run(tmp_path, "--events", "60", "--faults", "mes_send_failures")
    assert report.exit_code == 1, printed
    assert report.verdict is not None
    assert len(report.verdict.mes.work_orders_lost) == 1 and len(report.verdict.mes.outcomes_doubled) == 1, printed
    assert report.verdict.lost == report.verdict.doubled == [], printed  # F&O's side saw nothing wrong
    assert "MES side: lost = 1, doubled = 1" in printed and "CHAOS CHECK FAILED" in printed
