"""The order gate decides from the progress row this process last read or wrote (issue 15: a read
spared per message), and never acts on it unchecked: the message's ledger transaction carries the row
under the ETag the gate decided on. Two gates over one table stand for two instances."""

from dataclasses import replace

import pytest

from shared.inbound.order_gate import Admit, Duplicate, OrderGate, Step, Wait
from shared.store.ledger import CompanionConflict, LedgerEntry, State
from shared.store.progress import Progress
from tests.fakes import InMemoryLedger, InMemoryProgress, InMemoryTable


class CountingProgress(InMemoryProgress):
    def __init__(self, table: InMemoryTable) -> None:
        super().__init__(table)
        self.reads = 0

    def read(self, company: str, order: str) -> Progress:
        self.reads += 1
        return super().read(company, order)


@pytest.fixture
def table() -> InMemoryTable:
    return InMemoryTable()


def gate(table: InMemoryTable) -> tuple[OrderGate, CountingProgress]:
    store = CountingProgress(table)
    return OrderGate(store, gap_timeout_s=600), store


def entry(message_id: str, sequence: int) -> LedgerEntry:
    return LedgerEntry("USMF", message_id, State.FORWARDING, "material_consumed", production_order="P1", sequence=sequence)


def claim(ledger: InMemoryLedger, gate: OrderGate, message: LedgerEntry) -> LedgerEntry:
    """What the pipeline does with an admission: the claim and the row as decided on, in one transaction."""
    planned = gate.plan("USMF", "P1", Step.DURING, message.sequence)
    assert isinstance(planned.decision, Admit) and planned.row is not None
    claimed = ledger.create(message, companions=[gate.check(planned.row)])
    gate.stored(planned.row, claimed.companion_etags[0])
    return claimed


def forward(ledger: InMemoryLedger, gate: OrderGate, claimed: LedgerEntry) -> None:
    progress = gate.known("USMF", "P1")
    assert progress is not None
    planned = gate.plan_advance(progress, Step.DURING, claimed.sequence)
    forwarded = ledger.transition(claimed, State.FORWARDED, companions=[planned] if planned else None)
    gate.stored(gate.advanced(progress, Step.DURING, claimed.sequence), forwarded.companion_etags[0])


def test_the_next_in_sequence_is_decided_without_reading_the_row_this_instance_wrote(table):
    ledger = InMemoryLedger(table)
    one, store = gate(table)
    forward(ledger, one, claim(ledger, one, entry("m1", 1)))
    reads = store.reads
    forward(ledger, one, claim(ledger, one, entry("m2", 2)))
    assert store.reads == reads, "the row this instance wrote was read back"
    assert one.read("USMF", "P1").watermark == 2


def test_an_admission_from_a_stale_row_fails_the_claim_and_is_decided_again_as_a_duplicate(table):
    ledger = InMemoryLedger(table)
    one, _ = gate(table)
    other, _ = gate(table)
    one.read("USMF", "P1")  # this instance knows the order at watermark 0
    forward(ledger, other, claim(ledger, other, entry("m1", 1)))  # another instance forwards sequence 1
    stale = one.plan("USMF", "P1", Step.DURING, 1)
    assert isinstance(stale.decision, Admit) and stale.row is not None
    with pytest.raises(CompanionConflict):
        ledger.create(entry("m1-again", 1), companions=[one.check(stale.row)])
    assert ledger.get("USMF", "m1-again") is None, "nothing of the claim was written"
    one.forget("USMF", "P1")
    assert isinstance(one.plan("USMF", "P1", Step.DURING, 1).decision, Duplicate)


def test_a_wait_from_a_stale_row_fails_its_note_and_is_admitted_on_the_row_as_it_is(table):
    ledger = InMemoryLedger(table)
    one, _ = gate(table)
    other, _ = gate(table)
    one.read("USMF", "P1")
    forward(ledger, other, claim(ledger, other, entry("m1", 1)))
    stale = one.plan("USMF", "P1", Step.DURING, 2)
    assert isinstance(stale.decision, Wait) and stale.row is not None and not stale.unchanged
    waiting = replace(entry("m2", 2), state=State.WAITING)
    with pytest.raises(CompanionConflict):
        ledger.create(waiting, companions=[one.check(stale.row)])
    one.forget("USMF", "P1")
    assert isinstance(one.plan("USMF", "P1", Step.DURING, 2).decision, Admit)


def test_a_wait_notes_the_highest_waiting_sequence_so_that_a_chain_of_waiters_is_woken(table):
    one, _ = gate(table)
    one.read("USMF", "P1")
    first = one.plan("USMF", "P1", Step.DURING, 3)
    assert first.row is not None and first.row.waiting_for == 1 and first.row.behind == 3
    written = one.write(first.row)
    later = one.plan("USMF", "P1", Step.DURING, 5)
    assert later.row is not None and later.row.behind == 5 and later.row.etag == written.etag
    earlier = one.plan("USMF", "P1", Step.DURING, 2)
    assert earlier.row is not None and earlier.unchanged, "a lower waiter changes nothing on the row"


def test_a_confirmation_reads_the_row_and_keeps_what_it_found(table):
    ledger = InMemoryLedger(table)
    one, store = gate(table)
    other, _ = gate(table)
    known = one.read("USMF", "P1")
    assert one.confirm(known)
    forward(ledger, other, claim(ledger, other, entry("m1", 1)))
    reads = store.reads
    assert not one.confirm(known)
    assert store.reads == reads + 1
    found = one.known("USMF", "P1")
    assert found is not None and found.watermark == 1


def test_an_order_s_start_is_decided_without_a_read_and_its_claim_inserts_the_row(table):
    ledger = InMemoryLedger(table)
    one, store = gate(table)
    planned = one.plan("USMF", "P1", Step.START, 1)
    assert isinstance(planned.decision, Admit) and planned.row is not None and store.reads == 0
    start = LedgerEntry("USMF", "s1", State.FORWARDING, "production_started", production_order="P1", sequence=1)
    claimed = ledger.create(start, companions=[one.check(planned.row)])
    assert claimed.companion_etags and one.read("USMF", "P1").etag == claimed.companion_etags[0]


def test_a_start_whose_order_has_a_row_after_all_fails_its_claim_and_is_decided_again_on_the_row(table):
    ledger = InMemoryLedger(table)
    one, _ = gate(table)
    other, _ = gate(table)
    forward(ledger, other, claim(ledger, other, entry("m1", 1)))  # another instance forwarded sequence 1
    assumed = one.plan("USMF", "P1", Step.START, 1)
    assert isinstance(assumed.decision, Admit) and assumed.row is not None and not assumed.read_now
    resent = LedgerEntry("USMF", "s1-again", State.FORWARDING, "production_started", production_order="P1", sequence=1)
    with pytest.raises(CompanionConflict):
        ledger.create(resent, companions=[one.check(assumed.row)])
    assert ledger.get("USMF", "s1-again") is None, "nothing of the claim was written"
    one.forget("USMF", "P1")
    assert isinstance(one.plan("USMF", "P1", Step.START, 1).decision, Duplicate)
