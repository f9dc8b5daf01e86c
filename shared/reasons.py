"""Why a message is where it is: the `Reason` of its ledger row and of the pipeline's result.

`ParkReason` says why a message was kept for an operator (a Parked or Failed row); `NotParked`
why it was neither forwarded nor parked on this delivery (a Duplicate or Waiting row, a retry);
`Closed` why an operator's action closed a row (a Cancelled row).
The values are the strings rows have always held, so existing rows read the same; the console's
reason filter, the operations' bulk filter and the telemetry's reason dimension match on them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeAlias


class ParkReason(StrEnum):
    # Refused as read (shared/inbound/decode.py): the message cannot be processed as sent.
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


class NotParked(StrEnum):
    # Duplicate: no second call to F&O.
    DUPLICATE = "duplicate"  # the ledger knows the message id (or the copy was settled meanwhile)
    BELOW_WATERMARK = "below_watermark"  # the order gate has passed its sequence, with the same content
    # Waiting: the message is rescheduled, the delivery count untouched.
    ORDERING = "ordering"  # the order gate holds it behind an earlier message of its order
    IN_FLIGHT = "in_flight"  # another worker is forwarding it now
    # Retrying: the fault (shared/errors.py) the message waits out before the next attempt.
    ERROR = "error"
    TRANSIENT = "transient"
    THROTTLED = "throttled"
    NOT_FOUND = "not_found"
    AUTH = "auth"
    CONFIG = "config"
    ENTITY_TOO_LARGE = "entity_too_large"


class Closed(StrEnum):
    # Cancelled: an operator's action closed the row (shared/ops/operations.py); nothing goes to F&O under it.
    CANCELLED = "cancelled"  # the operator cancelled it
    REROUTED = "rerouted"  # a misrouted copy, resubmitted to the queue of its event type


#: Every reason a row or a result carries.
Reason: TypeAlias = ParkReason | NotParked | Closed
