"""One error taxonomy for everything that talks to F&O or to Table Storage.

The pipeline decides what to do with a failure from its class alone:
retry (Transient, Throttled), park with a reason (BusinessRejection, InvalidMessage, NotFound),
retry or park by the flow (InDoubt: a repeat is harmless for some F&O calls, never for SendMessage),
or stop and tell an administrator (AuthError, ConfigError).
"""

from __future__ import annotations

from shared.reasons import NotParked, ParkReason, Reason


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""

    #: Short machine-readable reason, used as the parked reason and as a telemetry dimension.
    reason: Reason = NotParked.ERROR
    #: For a failed `$batch` changeset: the Content-ID of the operation that failed.
    operation: str = ""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Transient(BridgeError):
    """Worth retrying: 5xx, timeouts, dropped connections, Table Storage hiccups."""

    reason: Reason = NotParked.TRANSIENT


class Throttled(Transient):
    """F&O answered 429; `retry_after` is the wait it asked for, in seconds."""

    reason: Reason = NotParked.THROTTLED

    def __init__(self, message: str, *, retry_after: float, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class InDoubt(Transient):
    """The request was sent, but no answer came back: F&O may or may not have acted on it. Retried
    only where a repeat is harmless; otherwise parked `in_doubt` (shared/inbound/pipeline.py)."""

    reason: Reason = ParkReason.IN_DOUBT


class BusinessRejection(BridgeError):
    """F&O refused the content (4xx or a write exception with an infolog). Never retried."""

    reason: Reason = ParkReason.REJECTED

    def __init__(self, message: str, *, infolog: str = "", status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.infolog = infolog


class NotFound(BridgeError):
    """The entity, service or record does not exist in F&O."""

    reason: Reason = NotParked.NOT_FOUND


class AuthError(BridgeError):
    """Entra refused the credentials, or F&O refused the token. Needs an administrator."""

    reason: Reason = NotParked.AUTH

    def __init__(self, message: str, *, aadsts: str = "", status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.aadsts = aadsts


class ConfigError(BridgeError):
    """A setting is missing or wrong; the message names it."""

    reason: Reason = NotParked.CONFIG


class InvalidMessage(BridgeError):
    """The inbound message cannot be processed as sent. Parked, never retried."""

    reason: ParkReason

    def __init__(self, reason: ParkReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EntityTooLarge(BridgeError):
    """A Table Storage entity over Azure's limits (1 MiB, 252 properties, 64 KiB a property). Azurite
    accepts such an entity, Azure refuses it: the store refuses it first, so local runs find it too."""

    reason: Reason = NotParked.ENTITY_TOO_LARGE
