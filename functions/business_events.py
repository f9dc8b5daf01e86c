"""What every Event Grid function does with its event."""

import logging

import azure.functions as func

from shared import runtime
from shared.fo_events import Handled, receive


def deliver(consumer: str, event: func.EventGridEvent) -> Handled:
    # OpenTelemetry mode does not trace Event Grid triggers: log the event id explicitly.
    logging.getLogger("mesbridge").info(
        "%s received Event Grid event %s", consumer, event.id, extra={"flow": consumer, "event_grid_id": event.id}
    )
    return receive(consumer, event.id, event.get_json(), runtime.ports())
