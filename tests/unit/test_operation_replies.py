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
