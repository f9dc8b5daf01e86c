"""What this process remembers of the waiting rows it wrote (shared/inbound/recent.py)."""

from __future__ import annotations

from shared.inbound.recent import Recent
from shared.store.ledger import LedgerEntry, State


def waiting(message_id: str) -> LedgerEntry:
    return LedgerEntry("USMF", message_id, State.WAITING, production_order="P1", sequence=2)


def test_a_waiting_row_is_kept_with_its_body_until_its_message_is_finished():
    recent = Recent()
    recent.waiting(waiting("m-1"), b"body")
    assert recent.waiting_row("USMF", "m-1") == (waiting("m-1"), b"body")
    recent.finished(LedgerEntry("USMF", "m-1", State.FORWARDED))
    assert recent.waiting_row("USMF", "m-1") is None


def test_only_waiting_rows_are_kept():
    recent = Recent()
    recent.waiting(LedgerEntry("USMF", "m-1", State.FORWARDING), b"body")
    assert recent.waiting_row("USMF", "m-1") is None


def test_the_bodies_kept_stay_within_their_bytes_the_oldest_going_first():
    recent = Recent(body_bytes=640)
    for n in range(100):
        recent.waiting(waiting(f"m-{n}"), b"x" * 10)
    kept = [n for n in range(100) if recent.waiting_row("USMF", f"m-{n}") is not None]
    assert kept == list(range(36, 100))  # 64 bodies of 10 bytes: the 640 bytes


def test_a_body_too_big_to_keep_is_read_from_the_ledger_instead():
    recent = Recent(body_bytes=640)
    recent.waiting(waiting("m-1"), b"x" * 11)  # over a 64th of what is kept
    assert recent.waiting_row("USMF", "m-1") is None


def test_rewriting_a_waiting_row_keeps_the_newer_row_and_counts_its_body_once():
    recent = Recent(body_bytes=640)
    first, second = waiting("m-1"), LedgerEntry("USMF", "m-1", State.WAITING, detail="again", etag="2")
    for _ in range(100):
        recent.waiting(first, b"x" * 10)
    recent.waiting(second, b"x" * 10)
    assert recent.waiting_row("USMF", "m-1") == (second, b"x" * 10)
    recent.forget_waiting([second])
    assert recent.waiting_row("USMF", "m-1") is None
