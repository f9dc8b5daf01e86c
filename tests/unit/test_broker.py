"""The in-memory broker against what docs/reference/azure-platform.md says Service Bus does."""

import pytest

from devtools.local_host.broker import InMemoryBroker, MessageSizeExceededError, SessionLockLostError


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def broker(clock):
    b = InMemoryBroker(clock=clock)
    b.declare("q", requires_session=True, max_delivery_count=3, lock_duration_s=30)
    return b


def test_fifo_within_a_session_and_one_receiver_per_session(broker):
    for n in range(3):
        broker.send("q", f"m{n}".encode(), session_id="A")
    broker.send("q", b"b0", session_id="B")
    session, token = broker.accept_session("q")
    assert session == "A"
    other, other_token = broker.accept_session("q")
    assert other == "B"  # A is locked: a second receiver gets another session
    first = broker.receive("q", "A", token)
    assert first.message.body == b"m0"
    assert broker.receive("q", "A", token) is None  # nothing overtakes the locked head of the session
    broker.complete(first)
    assert broker.receive("q", "A", token).message.body == b"m1"
    with pytest.raises(SessionLockLostError):
        broker.receive("q", "A", other_token)


def test_abandon_redelivers_with_a_higher_delivery_count_then_dead_letters(broker):
    broker.send("q", b"poison", session_id="A")
    for expected in (1, 2, 3):
        session, token = broker.accept_session("q")
        lease = broker.receive("q", session, token)
        assert lease.message.delivery_count == expected
        broker.abandon(lease)
        broker.release_session("q", session, token)
    assert broker.pending("q") == 0
    [dead] = broker.dead_letters("q")
    assert dead.dead_letter_reason == "MaxDeliveryCountExceeded"


def test_an_expired_lock_makes_the_message_visible_again(broker, clock):
    broker.send("q", b"slow", session_id="A")
    session, token = broker.accept_session("q")
    lease = broker.receive("q", session, token)
    clock.now += 31
    session, token = broker.accept_session("q")  # the session lock expired too
    again = broker.receive("q", session, token)
    assert again.message.delivery_count == 2
    with pytest.raises(RuntimeError, match="lock"):
        broker.complete(lease)  # the first receiver lost its lock


def test_scheduled_messages_become_visible_at_their_time(broker, clock):
    broker.schedule("q", b"later", message_id="s1", session_id="A", delay_s=10)
    assert broker.accept_session("q") is None
    assert broker.next_visible_in() == pytest.approx(10)
    clock.now += 10
    session, token = broker.accept_session("q")
    assert broker.receive("q", session, token).message.body == b"later"


def test_duplicate_message_ids_are_dropped_within_the_window(broker, clock):
    assert broker.send("q", b"1", message_id="same", session_id="A")
    assert not broker.send("q", b"2", message_id="same", session_id="A")
    assert broker.pending("q") == 1 and broker.queue("q").duplicates_dropped == 1
    clock.now += 601
    assert broker.send("q", b"3", message_id="same", session_id="A")


def test_size_limit_and_session_id_are_enforced_at_send(broker):
    with pytest.raises(MessageSizeExceededError):
        broker.send("q", b"x" * (256 * 1024 + 1), session_id="A")
    with pytest.raises(ValueError, match="SessionId"):
        broker.send("q", b"x")
