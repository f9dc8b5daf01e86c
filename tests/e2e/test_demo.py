"""`make demo` at a small size: the shift runs through the real functions and F&O's state checks out."""

import io

import pytest

from devtools import demo, scenario

pytestmark = pytest.mark.e2e


def test_a_small_shift_checks_out(tmp_path):
    out = io.StringIO()
    args = [
        "--orders",
        "6",
        "--moves",
        "3",
        "--quality",
        "3",
        "--malformed",
        "2",
        "--duplicate-rate",
        "0.2",
        "--throttle-burst",
        "1",
        "--pace",
        "0.01",
        "--timeout",
        "120",
        "--log",
        str(tmp_path / "demo.log"),
    ]
    parser_args = demo.build_parser().parse_args(args)
    assert demo.run(parser_args, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "Check against F&O: OK" in text
    assert "transfer journal T" in text and "moved" in text  # the genealogy follows a moved batch
    assert "work orders sent to MES .... 6" in text
    assert "parked for an operator ..... 2" in text


def test_the_check_notices_a_difference(tmp_path, monkeypatch):
    out = io.StringIO()
    original = scenario.build_shift

    def doctored(*a, **kw):
        shift = original(*a, **kw)
        shift.expected.fo_messages += 1  # claim F&O should have seen one message more
        return shift

    monkeypatch.setattr(demo, "build_shift", doctored)
    args = demo.build_parser().parse_args(
        [
            "--orders",
            "2",
            "--moves",
            "0",
            "--quality",
            "0",
            "--malformed",
            "0",
            "--duplicate-rate",
            "0",
            "--throttle-burst",
            "0",
            "--pace",
            "0",
            "--log",
            str(tmp_path / "demo.log"),
        ]
    )
    assert demo.run(args, out=out) == 1
    assert "CHECK FAILED" in out.getvalue()


def test_the_journal_check_wants_one_transfer_line_per_move():
    wanted = {"ItemNumber": "RM-1", "SourceWarehouseId": "11", "DestinationWarehouseId": "12", "InventoryQuantity": 5.0}
    line = {"JournalNumber": "T1", **wanted}
    right = {"journals": [{"JournalNumber": "T1", "JournalType": "Transfer"}], "journal_lines": [line]}
    wanted_transfer = {"JournalType": "Transfer", **wanted}
    assert demo._journal_problems(right, {"T1": wanted_transfer}) == []
    # The old shape: a movement journal with a minus and a plus line is what the check must refuse.
    movement = {
        "journals": [{"JournalNumber": "T1", "JournalType": "Movement"}],
        "journal_lines": [{**line, "InventoryQuantity": -5.0}, line],
    }
    problems = demo._journal_problems(movement, {"T1": wanted_transfer})
    assert any("Movement journal" in p for p in problems) and any("2 lines" in p for p in problems)
    moved_elsewhere = {**right, "journal_lines": [{**line, "DestinationWarehouseId": "13"}]}
    assert "DestinationWarehouseId" in demo._journal_problems(moved_elsewhere, {"T1": wanted_transfer})[0]
    assert demo._journal_problems(right, {"T2": wanted_transfer}) == ["journals differ: missing ['T2'], unexpected ['T1']"]
