"""The one clock the bridge reads: aware UTC, so every stored time compares with every other.

Code that decides by the time takes a `Clock` (default `utcnow`), so a test can hand it a fixed or
moving time instead of sleeping; the order gate does.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
