"""What this process knows of messages it handled lately, so that the copies the bridge schedules
itself need not read the ledger again:

- a message it brought to a final state: a late look-again or retry copy is the duplicate the ledger
  would call it (a final state is never left by anything that acts on such a copy; an operator's
  resubmission carries its own token and is read from the ledger);
- a waiting row the wake-up read to put its message back, or a step aside wrote before it put its
  message behind its successors: the copy starts from that row. Its ETag guards every move, and a row
  that changed since is read again (`shared/inbound/pipeline.py`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TypeVar

from shared.store.ledger import FINAL_STATES, LedgerEntry, State

#: Messages kept: far more than a busy plant's look-agains and wake-ups in flight at once.
_KEPT = 65_536

Kept = TypeVar("Kept")


class Recent:
    def __init__(self, kept: int = _KEPT) -> None:
        self._final: OrderedDict[tuple[str, str], State] = OrderedDict()
        self._woken: OrderedDict[tuple[str, str], LedgerEntry] = OrderedDict()
        self._kept = kept
        self._lock = threading.Lock()

    def finished(self, entry: LedgerEntry) -> None:
        if entry.state not in FINAL_STATES:
            return
        with self._lock:
            _put(self._final, (entry.company, entry.message_id), entry.state, self._kept)

    def final_state(self, company: str, message_id: str) -> State | None:
        with self._lock:
            return self._final.get((company, message_id))

    def woken(self, entry: LedgerEntry) -> None:
        """The wake-up read `entry` (or a step aside wrote it) and put its message back on its queue."""
        with self._lock:
            _put(self._woken, (entry.company, entry.message_id), entry, self._kept)

    def take_woken(self, company: str, message_id: str) -> LedgerEntry | None:
        """The row the wake-up read, once: a second copy reads the ledger."""
        with self._lock:
            return self._woken.pop((company, message_id), None)


def _put(kept: OrderedDict[tuple[str, str], Kept], key: tuple[str, str], value: Kept, limit: int) -> None:
    kept[key] = value
    kept.move_to_end(key)
    while len(kept) > limit:
        kept.popitem(last=False)
