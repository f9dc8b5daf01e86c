"""What every inbound flow function does with its Service Bus message.

The pipeline, its adapters and the message models are imported on the first message, not when the
host indexes the functions: registering the triggers needs none of them, and a cold start that
imports msal, requests, azure-core and pydantic-settings costs the host several times a bare
`import azure.functions` before it may pull the first message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.inbound.attempt import Result


def on_message(flow_name: str, message: func.ServiceBusMessage) -> Result:
    from shared import runtime
    from shared.inbound.flows import INBOUND_FLOWS
    from shared.inbound.pipeline import process
    from shared.inbound.servicebus import Delivery

    flow = INBOUND_FLOWS[flow_name]
    # Returning completes the message; an exception abandons it for redelivery. Everything the
    # pipeline can decide (park, wait, retry later) it records and then returns.
    return process(Delivery.from_trigger(message, flow.queue), flow, runtime.ports())
