"""The one optimistic-update loop: read a row, change it, write it under the ETag it was read with,
and start again from a fresh read when another worker wrote first. Every ETag-guarded
read-modify-write of the bridge's tables goes through `update_optimistically`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Row = TypeVar("Row")


class _Unread:
    """No row given: the loop reads one first (a given row may itself be None: "there was none")."""


UNREAD = _Unread()

#: Enough for any realistic contention (a handful of workers on one order); past it the storage call fails
#: as a conflict, and the caller's retry (the broker's redelivery) takes it from there.
ATTEMPTS = 20


def update_optimistically(
    read: Callable[[], Row],
    change: Callable[[Row], Row],
    write: Callable[[Row], Row],
    *,
    conflict: type[Exception],
    what: str,
    start: Row | _Unread = UNREAD,
) -> Row:
    """`change` applied to the row and stored; `write` raises `conflict` when the row changed since it
    was read. `start` is a row the caller read just before (saves one read): it must be fresh, since a
    change that leaves it as it is is not written and the row is returned as it was."""
    current = read() if isinstance(start, _Unread) else start
    for _ in range(ATTEMPTS):
        wanted = change(current)
        if wanted == current:
            return current
        try:
            return write(wanted)
        except conflict:
            current = read()
    raise conflict(f"{what} kept changing")
