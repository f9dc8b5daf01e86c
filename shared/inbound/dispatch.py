"""The F&O call of one inbound message: make it, and name it for the ledger.

Which error means what (retry, park, in doubt) is the pipeline's to decide; this module only makes
the call and describes it (its type, and for a SendMessage the content hash F&O's processed event echoes).
"""

from __future__ import annotations

import hashlib

from shared.errors import BusinessRejection
from shared.fo.client import FoApi, message_content
from shared.inbound.mapping import Changeset, FoCall, SendMessage, ServiceCall
from shared.store.ledger import Companion, LedgerEntry, content_index_row


def execute(fo: FoApi, call: FoCall) -> str:
    """Make the F&O call; returns F&O's reference for the ledger (quality order, journal number)."""
    if isinstance(call, SendMessage):
        fo.send_message(call.company, call.message_type, call.content)
        return ""
    if isinstance(call, ServiceCall):
        answer = fo.call_service(call.path, call.payload, idempotent=True)
        return str(answer.get("QualityOrderNumber", "")) if isinstance(answer, dict) else ""
    if isinstance(call, Changeset):
        try:
            fo.batch(call.operations)
        except BusinessRejection as exc:
            # The header's key derives from the MES message id: "already exists" on it means an
            # earlier attempt was applied (changesets are atomic), so this one is done too.
            if exc.operation == "1" and "already exists" in exc.infolog:
                return call.natural_key
            raise
        return call.natural_key
    raise TypeError(call)


def content_hash(call: FoCall) -> str:
    """For a SendMessage: the hash of `_messageContent` exactly as sent, which F&O echoes when it processed it."""
    return hashlib.sha256(message_content(call.content).encode()).hexdigest() if isinstance(call, SendMessage) else ""


def message_type(call: FoCall) -> str:
    """The call as the ledger names it: the message type, the service path, or the changeset's entities."""
    if isinstance(call, SendMessage):
        return call.message_type
    if isinstance(call, ServiceCall):
        return call.path
    return "$batch:" + ",".join(sorted({op.path for op in call.operations}))


def indexed(entry: LedgerEntry, call: FoCall) -> tuple[str, str, list[Companion]]:
    """The call's type, its content hash and the content index row F&O's processed event will look up."""
    call_type = message_type(call)
    hashed = content_hash(call)
    return call_type, hashed, [content_index_row(entry.company, hashed, entry.message_id, call_type)] if hashed else []
