"""One reply shape for the two front ends of the operations: the CLI answers what the HTTP API
answers (shared/ops/operations.py shapes both), its refusals included."""

import io
import json
from types import SimpleNamespace

import pytest

from shared.ops import cli, operations


def test_the_filter_reads_text_values_the_same_for_both_front_ends():
    where = operations.parked_filter({"flow": "material_consumed", "reason": "", "older_than_s": "60", "max_attempts": "2"})
    assert where == operations.ParkedFilter(flow="material_consumed", older_than_s=60.0, max_attempts=2)
    assert operations.parked_filter({}).is_empty
    with pytest.raises(operations.OperationError, match="max_attempts must be a number"):
        operations.parked_filter({"max_attempts": "two"})


def test_the_cli_refuses_a_bad_filter_with_the_http_error_reply_not_a_traceback():
    out = io.StringIO()
    code = cli.main(["parked", "--older-than-s", "an hour"], ports=SimpleNamespace(ledger=None), out=out)  # type: ignore[arg-type]
    assert code == 1
    assert json.loads(out.getvalue()) == operations.error_reply(operations.OperationError("older_than_s must be a number"))


def test_a_released_gap_is_answered_with_the_watermark_the_skipped_and_the_resubmitted():
    progress = SimpleNamespace(watermark=7, skipped=(4,))
    resubmitted = [SimpleNamespace(entry=SimpleNamespace(message_id="m5"))]
    assert operations.gap_released_reply(progress, resubmitted) == {"watermark": 7, "skipped": [4], "resubmitted": ["m5"]}  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (["release-gap", "--company", "USMF", "--order", "P1", "--missing", "four", "--reason", "r"], operations.MISSING_REFUSAL),
        (["release-gap", "--company", "USMF", "--order", "P1", "--missing", "4²", "--reason", "r"], operations.MISSING_REFUSAL),
        (["resubmit-dead-lettered", "--flow", "material_consumed", "--sequence", "-3"], operations.SEQUENCE_REFUSAL),
        (["lineage", "--company", "USMF", "--item", "FG-1", "--batch", "B1", "--depth", "deep"], operations.DEPTH_REFUSAL),
    ],
)
def test_the_cli_refuses_a_number_that_is_not_one_as_http_does_not_with_a_traceback(argv, refusal):
    out = io.StringIO()
    ports = SimpleNamespace(ledger=None, gate=None, requeue=None, dead_letters=None, lineage=None)
    assert cli.main(argv, ports=ports, out=out) == 1  # type: ignore[arg-type]
    assert json.loads(out.getvalue()) == {"error": refusal}


def test_a_whole_number_takes_ascii_digits_only():
    assert operations.whole_number(" 42 ", "refused") == 42
    for raw in ("", None, "4.0", "-1", "²", "٣"):
        with pytest.raises(operations.OperationError, match="refused"):
            operations.whole_number(raw, "refused")


def test_a_dead_lettered_message_that_is_not_there_is_not_found_not_a_bad_request():
    class NoDeadLetters:
        def resubmit_dead_lettered(self, queue: str, sequence_number: int) -> None:
            raise LookupError(f"no dead-lettered message {sequence_number} on {queue}")

    with pytest.raises(operations.NoSuchMessage, match="no dead-lettered message 7"):
        operations.resubmit_dead_lettered(NoDeadLetters(), "material_consumed", 7)  # type: ignore[arg-type]
