"""The order gate: keeps each production order's messages in MES order across the flows' queues.

With a MES sequence number, a message is forwarded only after its predecessor; one below the
watermark is a duplicate; a gap older than the timeout parks the waiting message with the
missing number. Without sequence numbers: nothing overtakes the order's start, the end
overtakes nothing still waiting. Progress rows are ETag-guarded, so instances can race safely.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared.clock import Clock, utcnow
from shared.reasons import NotParked, ParkReason
from shared.store.ledger import Companion
from shared.store.progress import Progress as Progress  # re-exported: the gate's callers read it
from shared.store.progress import ProgressChanged


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


#: The wait a decision starts: what the order now waits for (a sequence, or 0 for its start) and since when.
Waiting = tuple[int, datetime]


def decision(
    progress: Progress,
    flow: str,
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
    if flow == "production_started" or not require_start:
        if flow == "production_ended" and later_waiting:
            return Wait(NotParked.ORDERING, f"waiting for {later_waiting} earlier message(s) of {order}"), None
        return Admit(progress), None
    if not progress.started:
        return _wait_or_park(
            progress, None, now, gap_timeout, ParkReason.NO_START, f"waiting for the production start of {order}"
        )
    if flow == "production_ended" and later_waiting:
        return Wait(NotParked.ORDERING, f"waiting for {later_waiting} earlier message(s) of {order}"), None
    return Admit(progress), None


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

    def read(self, company: str, order: str) -> Progress:
        return self._store.read(company, order)

    def _update(self, company: str, order: str, change: Callable[[Progress], Progress]) -> Progress:
        """Apply `change(progress) -> progress` under optimistic concurrency, retrying on conflicts."""
        for _ in range(20):
            current = self.read(company, order)
            wanted = change(current)
            if wanted == current:
                return current
            try:
                return self._store.write(wanted)
            except ProgressChanged:
                continue
        raise ProgressChanged(f"order progress of {order} kept changing")

    # --- decisions ------------------------------------------------------------------------------
    def decide(self, company: str, order: str, flow: str, sequence: int | None, *, later_waiting: int = 0) -> Decision:
        progress = self.read(company, order)
        verdict, waiting = decision(
            progress,
            flow,
            sequence,
            self._clock(),
            gap_timeout=self.gap_timeout,
            require_start=self.require_start,
            later_waiting=later_waiting,
        )
        if waiting is not None:
            key, since = waiting

            def note(p: Progress) -> Progress:
                if p.waiting_for == key and p.waiting_since is not None:
                    return p
                return replace(p, waiting_for=key, waiting_since=since)

            self._update(company, order, note)
        return verdict

    @staticmethod
    def _forwarded(flow: str, sequence: int | None) -> Callable[[Progress], Progress]:
        def forwarded(p: Progress) -> Progress:
            watermark = max(p.watermark, sequence) if sequence is not None else p.watermark
            clear = p.waiting_for is not None and (
                p.waiting_for <= watermark if sequence is not None else flow == "production_started"
            )
            return replace(
                p,
                watermark=watermark,
                started=p.started or flow == "production_started",
                ended=p.ended or flow == "production_ended",
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
            self._store.write(replace(progress, held=False))

    def plan_advance(self, progress: Progress, flow: str, sequence: int | None) -> Companion | None:
        """The progress write for a forwarded message, as an operation for the ledger's transaction."""
        wanted = self._forwarded(flow, sequence)(progress)
        if wanted == progress:
            return None
        return self._store.planned_write(progress, wanted)

    def advance(self, company: str, order: str, flow: str, sequence: int | None) -> Progress:
        """Record that a message was forwarded: the watermark moves, start and end are noted."""
        return self._update(company, order, self._forwarded(flow, sequence))

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
