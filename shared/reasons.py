"""Why a message was kept for an operator: the `Reason` of a Parked (or Failed) ledger row.

The values are the strings rows have always held, so existing rows read the same; the console's
reason filter and the operations' bulk filter match on them.
"""

from __future__ import annotations

from enum import StrEnum


class ParkReason(StrEnum):
    # Refused as read (shared/inbound/pipeline.py decode): the message cannot be processed as sent.
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    INVALID_MESSAGE = "invalid_message"
    WRONG_QUEUE = "wrong_queue"
    UNKNOWN_TYPE = "unknown_type"
    SEQUENCE_OUT_OF_RANGE = "sequence_out_of_range"
    UNSUPPORTED_VERSION = "unsupported_version"
    CLOCK_SKEW = "clock_skew"
    UNKNOWN_COMPANY = "unknown_company"
    # The order gate (shared/inbound/order_gate.py) and the ledger's duplicate check.
    GAP = "gap"
    NO_START = "no_start"
    CONFLICT = "conflict"
    # F&O.
    REJECTED = "rejected"
    IN_DOUBT = "in_doubt"
    RETRIES_EXHAUSTED = "retries_exhausted"
    FO_FAILED = "fo_failed"  # a Failed row: F&O's message processor refused it
    # F&O -> MES (shared/outbound/handlers.py): a work order MES could not act on.
    INVALID_WORK_ORDER = "invalid_work_order"
