"""What this process knows of messages it handled lately, so that the copies the bridge schedules
itself need not read the ledger again:

- a message it brought to a final state: a late look-again or retry copy is the duplicate the ledger
  would call it (a final state is never left by anything that acts on such a copy; an operator's
  resubmission carries its own token and is read from the ledger);
- a waiting row the wake-up read to put its message back, or a step aside wrote before it put its
  message behind its successors: the copy starts from that row. Its ETag guards every move, and a row
  that changed since is read again (`shared/inbound/pipeline.py`);
- a waiting row this process wrote, with the message's body: the wake-up and the aggregation, once the
  held index names it, take it from here instead of reading it (shared/inbound/wakeup.py). The body
  never changes under a message id (a copy with other content is parked, not written), and the
  row's ETag guards whatever is done with it;
- an order's held index as this process last knew it, tied to the ETag of the order's progress row:
  every wait noted, park and claim of the order writes that row in the message's own transaction,
  so while the row keeps that ETag nothing was held or let go that the index would show and this
  does not (`HeldLook`). Each such transaction of this process moves it on to the row's new ETag.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TypeVar

from shared.store.ledger import FINAL_STATES, HELD_STATES, LedgerEntry, State

#: Messages kept: far more than a busy plant's look-agains and wake-ups in flight at once.
_KEPT = 65_536
#: Bytes of waiting messages' bodies kept: a plant's waiting messages are a few hundred bytes each,
#: and a message too big for this is read from the ledger, as it is on another instance.
_BODY_BYTES = 32 * 1024 * 1024

Kept = TypeVar("Kept")


class Recent:
    def __init__(self, kept: int = _KEPT, body_bytes: int = _BODY_BYTES) -> None:
        self._final: OrderedDict[tuple[str, str], State] = OrderedDict()
        self._woken: OrderedDict[tuple[str, str], LedgerEntry] = OrderedDict()
        self._waiting: OrderedDict[tuple[str, str], tuple[LedgerEntry, bytes]] = OrderedDict()
        self._waiting_bytes = 0
        self._looks: OrderedDict[tuple[str, str], tuple[str, tuple[LedgerEntry, ...]]] = OrderedDict()
        self._kept = kept
        self._body_bytes = body_bytes
        self._lock = threading.Lock()

    def finished(self, entry: LedgerEntry) -> None:
        if entry.state not in FINAL_STATES:
            return
        key = (entry.company, entry.message_id)
        with self._lock:
            _put(self._final, key, entry.state, self._kept)
            self._drop_waiting(key)

    def waiting(self, entry: LedgerEntry, body: bytes) -> None:
        """This process wrote `entry`, Waiting, for the message whose body is `body`."""
        if entry.state is not State.WAITING or len(body) > self._body_bytes // 64:
            return
        key = (entry.company, entry.message_id)
        with self._lock:
            self._drop_waiting(key)
            self._waiting[key] = (entry, body)
            self._waiting_bytes += len(body)
            while self._waiting and (len(self._waiting) > self._kept or self._waiting_bytes > self._body_bytes):
                _, (_, dropped) = self._waiting.popitem(last=False)
                self._waiting_bytes -= len(dropped)

    def waiting_row(self, company: str, message_id: str) -> tuple[LedgerEntry, bytes] | None:
        """The Waiting row this process last wrote for the message, and its body; None if it wrote none."""
        with self._lock:
            return self._waiting.get((company, message_id))

    def looked(self, company: str, order: str, etag: str, held: list[LedgerEntry]) -> None:
        """The order's held rows (as its held index describes them) while its progress row has `etag`."""
        if etag:
            with self._lock:
                _put(self._looks, (company, order), (etag, tuple(held)), self._kept)

    def held_at(self, company: str, order: str, etag: str) -> list[LedgerEntry] | None:
        """The order's held rows if the progress row had `etag` when they were last known; else None."""
        with self._lock:
            known = self._looks.get((company, order))
        return list(known[1]) if known is not None and etag and known[0] == etag else None

    def moved(self, company: str, order: str, before: str, after: str, written: LedgerEntry) -> None:
        """A transaction of this process moved the order's progress row from ETag `before` to `after`
        and wrote `written` with it: the held rows known at `before` are known at `after`."""
        key = (company, order)
        with self._lock:
            known = self._looks.pop(key, None)
            if known is None or not after or known[0] != before:
                return
            held = [e for e in known[1] if e.message_id != written.message_id]
            if written.state in HELD_STATES:
                held.append(written)
            _put(self._looks, key, (after, tuple(held)), self._kept)

    def forget_waiting(self, entries: list[LedgerEntry]) -> None:
        """These rows were written Waiting again by a move that did not keep them here (a merged
        message undone): they are read from the ledger when they are needed."""
        with self._lock:
            for entry in entries:
                self._drop_waiting((entry.company, entry.message_id))

    def _drop_waiting(self, key: tuple[str, str]) -> None:
        kept = self._waiting.pop(key, None)
        if kept is not None:
            self._waiting_bytes -= len(kept[1])

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
