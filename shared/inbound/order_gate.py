"""The order gate: keeps each production order's messages in MES order across the flows' queues.

With a MES sequence number, a message is forwarded only after its predecessor; one below the
watermark is a duplicate; a gap older than the timeout parks the waiting message with the
missing number. Without sequence numbers: nothing overtakes the order's start, the end
overtakes nothing still waiting. Progress rows are ETag-guarded, so instances can race safely.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from shared.clock import Clock, utcnow
from shared.reasons import NotParked, ParkReason
from shared.store.ledger import Companion
from shared.store.optimistic import ATTEMPTS, UNREAD, update_optimistically
from shared.store.progress import Progress as Progress  # re-exported: the gate's callers read it
from shared.store.progress import ProgressChanged


class Step(StrEnum):
    """Where a flow's messages stand in a production order's life: all the gate needs to know of a
    flow (`Flow.step`, shared/inbound/flows.py), so that no flow is known to it by name."""

    #: Opens the order: without sequence numbers, nothing of the order goes to F&O before it.
    START = "start"
    DURING = "during"
    #: Closes the order: without a sequence number, it overtakes no message of the order in flight.
    END = "end"


class ProgressStore(Protocol):
    """Where the gate keeps each order's progress: `TableProgressStore` (shared/store/progress.py) in
    Table Storage, `InMemoryProgress` (tests/fakes.py) in memory; tests/integration/test_gate_contract.py
    runs the same cases against both."""

    def read(self, company: str, order: str) -> Progress:
        """The order's progress as stored (a fresh one, without ETag, when it has none yet)."""
        ...

    def write(self, progress: Progress) -> Progress:
        """Store `progress` if the row is still as read (its ETag; none: not there yet), else `ProgressChanged`."""
        ...

    def planned_write(self, progress: Progress, wanted: Progress) -> Companion:
        """The same write, as an operation for the ledger row's transaction (`LedgerStore.transition`)."""
        ...


@dataclass(frozen=True)
class Admit:
    progress: Progress


@dataclass(frozen=True)
class Wait:
    reason: NotParked
    detail: str
    #: The wait is noted on the order's row, so the watermark move that ends it resumes the message
    #: (shared/inbound/wakeup.py); False: only its rescheduled copy looks again.
    wakes: bool = True


@dataclass(frozen=True)
class Duplicate:
    detail: str


@dataclass(frozen=True)
class Gap:
    reason: ParkReason
    detail: str
    missing: int | None


@dataclass(frozen=True)
class Conflict:
    """The message may not go to F&O as it is: its sequence number is already spoken for."""

    detail: str
    other: str = ""  # the message id that holds the sequence, when one does


Decision = Admit | Wait | Duplicate | Gap | Conflict


@dataclass(frozen=True)
class Plan:
    """A decision, and what it needs of the order's progress row (`OrderGate.plan`)."""

    decision: Decision
    #: The row as the decision needs it stored, guarded by the ETag of the row it was decided on;
    #: None: the decision holds on any newer row.
    row: Progress | None = None
    #: True: `row` is the row as read, the transaction only checks it; False: it notes something new.
    unchanged: bool = True
    #: The row was read from the table for this decision (not taken from the gate's memory).
    read_now: bool = False


#: The wait a decision starts: what the order now waits for (a sequence, or 0 for its start) and since when.
Waiting = tuple[int, datetime]


def decision(
    progress: Progress,
    step: Step,
    sequence: int | None,
    now: datetime,
    *,
    gap_timeout: timedelta,
    require_start: bool = True,
    later_waiting: int = 0,
) -> tuple[Decision, Waiting | None]:
    """The gate's decision for one message, from the order's progress as read and the time: pure, so
    every branch is a unit test. The second value is the wait to note on the progress row when the
    order starts waiting now (`OrderGate.decide` writes it under the row's ETag)."""
    order = progress.order
    if sequence is not None:
        expected = progress.watermark + 1
        if sequence < expected:
            released = _released(progress, sequence)
            if released is not None:
                # The message the operator gave up on came after all: F&O never had it.
                return Conflict(
                    f"sequence {sequence} of {order} was released as a gap by {released['by']} at {released['at']} "
                    f"({released['reason']}); this message came after the release and was not sent to F&O"
                ), None
            return Duplicate(f"sequence {sequence} is at or below the order's watermark {progress.watermark}"), None
        if sequence == expected:
            return Admit(progress), None
        return _wait_or_park(progress, expected, now, gap_timeout, ParkReason.GAP, f"waiting for sequence {expected} of {order}")
    if step is Step.START or not require_start:
        if step is Step.END and later_waiting:
            return Wait(NotParked.ORDERING, f"waiting for {later_waiting} earlier message(s) of {order}", wakes=False), None
        return Admit(progress), None
    if not progress.started:
        return _wait_or_park(
            progress, None, now, gap_timeout, ParkReason.NO_START, f"waiting for the production start of {order}"
        )
    if step is Step.END and later_waiting:
        return Wait(NotParked.ORDERING, f"waiting for {later_waiting} earlier message(s) of {order}", wakes=False), None
    return Admit(progress), None


def wakes_followers(before: Progress, after: Progress) -> bool:
    """True when a forward that moved the order's row from `before` to `after` must wake what the
    gate holds: something waited or is parked behind it."""
    return (
        before.held or before.waiting_for is not None or (after.watermark > before.watermark and before.behind > before.watermark)
    )


def _wait_or_park(
    progress: Progress, expected: int | None, now: datetime, gap_timeout: timedelta, reason: ParkReason, detail: str
) -> tuple[Decision, Waiting | None]:
    key = expected if expected is not None else 0
    if progress.waiting_for == key and progress.waiting_since is not None:
        if now - progress.waiting_since >= gap_timeout:
            missing = f"sequence {expected} never arrived" if expected is not None else "the production start never arrived"
            return Gap(reason, f"{missing} within {gap_timeout.total_seconds():g} s", expected), None
        return Wait(NotParked.ORDERING, detail), None
    return Wait(NotParked.ORDERING, detail), (key, now)


def _released(progress: Progress, sequence: int) -> dict[str, Any] | None:
    """The operator's release that skipped `sequence`, if one did."""
    for entry in progress.skipped:
        if int(entry["sequence"]) <= sequence <= int(entry.get("through", entry["sequence"])):
            return entry
    return None


class OrderGate:
    """The gate over a `ProgressStore`: reads an order's progress, asks `decision`, and writes what
    changes under the row's ETag, retrying when another worker wrote first."""

    def __init__(self, store: ProgressStore, *, gap_timeout_s: float, require_start: bool = True, clock: Clock = utcnow) -> None:
        self._store = store
        self._clock = clock
        self.gap_timeout = timedelta(seconds=gap_timeout_s)
        self.require_start = require_start
        # The progress rows this process last read or wrote, with their ETags. One instance holds an
        # order's sessions, so it usually knows the row as stored and spares the read. Only decisions
        # a newer row cannot turn are taken from it (see `decide`); every write is guarded by its ETag,
        # and a conflict drops the row from here.
        self._known: OrderedDict[tuple[str, str], Progress] = OrderedDict()
        self._known_lock = threading.Lock()
        # Orders whose row changed behind this process's back: read, never taken to have no row.
        self._forgotten: OrderedDict[tuple[str, str], None] = OrderedDict()

    def read(self, company: str, order: str) -> Progress:
        """The order's progress as stored now."""
        return self._keep(self._store.read(company, order))

    def _keep(self, progress: Progress) -> Progress:
        with self._known_lock:
            self._known[(progress.company, progress.order)] = progress
            self._forgotten.pop((progress.company, progress.order), None)
            self._known.move_to_end((progress.company, progress.order))
            while len(self._known) > _KNOWN_ORDERS:
                self._known.popitem(last=False)
        return progress

    def known(self, company: str, order: str) -> Progress | None:
        with self._known_lock:
            return self._known.get((company, order))

    def forget(self, company: str, order: str) -> None:
        """The row changed behind this process's back (an ETag did not match): read it next time."""
        with self._known_lock:
            self._known.pop((company, order), None)
            self._forgotten[(company, order)] = None
            while len(self._forgotten) > _KNOWN_ORDERS:
                self._forgotten.popitem(last=False)

    def _assumed_new(self, company: str, order: str) -> bool:
        with self._known_lock:
            return (company, order) not in self._forgotten

    def _write(self, progress: Progress) -> Progress:
        try:
            return self._keep(self._store.write(progress))
        except ProgressChanged:
            self.forget(progress.company, progress.order)
            raise

    def _update(
        self, company: str, order: str, change: Callable[[Progress], Progress], *, start: Progress | None = None
    ) -> Progress:
        """Apply `change(progress) -> progress` under optimistic concurrency, retrying on conflicts."""
        return update_optimistically(
            lambda: self.read(company, order),
            change,
            self._write,
            conflict=ProgressChanged,
            what=f"order progress of {order}",
            start=UNREAD if start is None else start,
        )

    # --- decisions ------------------------------------------------------------------------------
    def decide(self, company: str, order: str, step: Step, sequence: int | None, *, later_waiting: int = 0) -> Decision:
        """The gate's decision on the order's row as stored, with the wait it starts noted on the row."""
        for _ in range(ATTEMPTS):
            planned = self.plan(company, order, step, sequence, later_waiting=later_waiting, fresh=True)
            if not isinstance(planned.decision, Wait) or planned.row is None or planned.unchanged:
                return planned.decision
            try:
                self._write(planned.row)
            except ProgressChanged:
                continue  # decided again on the row as it is now: what changed may be the message it waits for
            return planned.decision
        raise ProgressChanged(f"order progress of {order} kept changing")

    def plan(
        self, company: str, order: str, step: Step, sequence: int | None, *, later_waiting: int = 0, fresh: bool = False
    ) -> Plan:
        """The gate's decision, and the order's row as the decision needs it, for the caller to write
        (`check`) in the message's ledger transaction: if the row changed since it was read, that
        transaction fails and the caller decides again (`forget`, then `plan`).

        The row is the one this process last read or wrote, unless `fresh`: one instance holds an
        order's sessions, so it usually knows the row as stored. A stale row cannot do harm: a
        duplicate or a released sequence stays so on a newer row (the watermark and the releases only
        grow), as does an end that waits for messages in flight once the order started; every other
        decision is only acted on in a transaction guarded by the row's ETag.

        An order's start (numbered 1, or not at all) is usually its first message: with nothing in
        memory, the order is taken to have no row yet, unread. The claim's transaction then inserts the
        row, and fails if there is one (the caller decides again, on the row read)."""
        known = None if fresh else self.known(company, order)
        if known is None and not fresh and step is Step.START and sequence in (None, 1) and self._assumed_new(company, order):
            return self._planned(Progress(company, order), step, sequence, later_waiting, read_now=False)
        progress = known if known is not None else self.read(company, order)
        return self._planned(progress, step, sequence, later_waiting, read_now=known is None)

    def _planned(self, progress: Progress, step: Step, sequence: int | None, later_waiting: int, *, read_now: bool) -> Plan:
        verdict, waiting = self._decision(progress, step, sequence, later_waiting)
        if isinstance(verdict, (Duplicate, Conflict)) or (isinstance(verdict, Wait) and not verdict.wakes):
            return Plan(verdict, read_now=read_now)
        row = progress
        if isinstance(verdict, Gap):
            # The watermark move that ends the gap looks for what the gate parked.
            row = replace(row, held=True)
        elif isinstance(verdict, Wait):
            if waiting is not None:
                row = replace(row, waiting_for=waiting[0], waiting_since=waiting[1])
            if sequence is not None and sequence > row.behind:
                row = replace(row, behind=sequence)
        return Plan(verdict, row, unchanged=row == progress, read_now=read_now)

    def confirm(self, progress: Progress) -> bool:
        """True if the order's row is still as `progress` (its ETag): a decision needs it and the
        message's own row has nothing to write. A read; the gate keeps the row it finds."""
        return self.read(progress.company, progress.order).etag == progress.etag

    def _decision(
        self, progress: Progress, step: Step, sequence: int | None, later_waiting: int
    ) -> tuple[Decision, Waiting | None]:
        return decision(
            progress,
            step,
            sequence,
            self._clock(),
            gap_timeout=self.gap_timeout,
            require_start=self.require_start,
            later_waiting=later_waiting,
        )

    def write(self, progress: Progress) -> Progress:
        """Store `progress` if the row is still as read (its ETag), else `ProgressChanged`."""
        return self._write(progress)

    def check(self, progress: Progress) -> Companion:
        """`progress` (the order's row as the gate decided on it, or as `plan` notes a wait on it) as an
        operation for the message's ledger transaction, guarded by the ETag it was read with: the
        transaction fails (`CompanionConflict`) if the row changed since."""
        return self._store.planned_write(progress, progress)

    def stored(self, progress: Progress, etag: str) -> Progress:
        """`progress` was written by a ledger transaction, which gave it `etag`."""
        return self._keep(replace(progress, etag=etag))

    @staticmethod
    def _forwarded(step: Step, sequence: int | None) -> Callable[[Progress], Progress]:
        def forwarded(p: Progress) -> Progress:
            watermark = max(p.watermark, sequence) if sequence is not None else p.watermark
            clear = p.waiting_for is not None and (p.waiting_for <= watermark if sequence is not None else step is Step.START)
            return replace(
                p,
                watermark=watermark,
                started=p.started or step is Step.START,
                ended=p.ended or step is Step.END,
                waiting_for=None if clear else p.waiting_for,
                waiting_since=None if clear else p.waiting_since,
            )

        return forwarded

    def note_held(self, company: str, order: str) -> Progress:
        """The gate is about to park a message of the order: the next watermark move must look for it."""
        return self._update(company, order, lambda p: replace(p, held=True))

    def clear_held(self, progress: Progress) -> None:
        """Nothing of the order is parked any more, as of `progress`: unless the row changed since."""
        if not progress.held or not progress.etag:
            return
        # Changed meanwhile (perhaps a new park): the flag stays, and the next move looks again.
        with contextlib.suppress(ProgressChanged):
            self._write(replace(progress, held=False))

    def plan_advance(self, progress: Progress, step: Step, sequence: int | None) -> Companion | None:
        """The progress write for a forwarded message, as an operation for the ledger's transaction."""
        wanted = self.advanced(progress, step, sequence)
        if wanted == progress:
            return None
        return self._store.planned_write(progress, wanted)

    def advanced(self, progress: Progress, step: Step, sequence: int | None) -> Progress:
        """`progress` after a forward of a `step` message with `sequence` (what `plan_advance` writes)."""
        return self._forwarded(step, sequence)(progress)

    def advance(self, company: str, order: str, step: Step, sequence: int | None) -> Progress:
        """Record that a message was forwarded: the watermark moves, start and end are noted."""
        return self._update(company, order, self._forwarded(step, sequence))

    def advance_waking(self, company: str, order: str, step: Step, sequence: int | None) -> tuple[Progress, bool]:
        """`advance`, and whether the row as it was before said that something waits or is held
        (then the forward wakes the order's next message)."""
        before: list[Progress] = []

        def forwarded(p: Progress) -> Progress:
            before[:] = [p]
            return self._forwarded(step, sequence)(p)

        after = self._update(company, order, forwarded)
        return after, any(wakes_followers(p, after) for p in before)

    def release_gap(
        self, company: str, order: str, missing: int, reason: str, who: str = "operator", *, through: int | None = None
    ) -> Progress:
        """Skip the sequence numbers `missing` to `through` (default: `missing` alone) the MES will never
        send: the watermark moves past them in one step, however many there are."""
        last = missing if through is None else through
        if last < missing:
            raise ValueError(f"cannot skip {missing} through {last}")

        def skip(p: Progress) -> Progress:
            if missing != p.watermark + 1:
                raise ValueError(f"{order} waits for sequence {p.watermark + 1}, not {missing}")
            at = self._clock().isoformat(timespec="seconds")
            entry: dict[str, Any] = {"sequence": missing, "reason": reason, "by": who, "at": at}
            if last != missing:
                entry["through"] = last
            return replace(p, watermark=last, waiting_for=None, waiting_since=None, skipped=(*p.skipped, entry))

        return self._update(company, order, skip)


#: Progress rows an instance keeps in memory: a few thousand orders in flight at once is a busy plant.
_KNOWN_ORDERS = 4096
