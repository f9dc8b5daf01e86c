"""What every Event Grid function does with its event (the handlers load on the first event,
as in functions/inbound.py)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.outbound.handlers import Handled


def on_event(consumer: str, event: func.EventGridEvent) -> Handled:
    from shared import runtime
    from shared.outbound.handlers import receive

    # OpenTelemetry mode does not trace Event Grid triggers: log the event id explicitly.
    logging.getLogger("mesbridge").info(
        "%s received Event Grid event %s", consumer, event.id, extra={"flow": consumer, "event_grid_id": event.id}
    )
    return receive(consumer, event.id, event.get_json(), runtime.ports())
