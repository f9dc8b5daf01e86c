"""Runs the functions `function_app.py` declares against an in-memory Service Bus and the emulator's events."""

from devtools.local_host.broker import InMemoryBroker, MessageSizeExceededError
from devtools.local_host.host import LocalHost

__all__ = ["InMemoryBroker", "LocalHost", "MessageSizeExceededError"]
