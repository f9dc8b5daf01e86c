"""What every inbound flow function does with its Service Bus message."""

import azure.functions as func

from shared import runtime
from shared.pipeline import Flow, Result, process
from shared.servicebus import Delivery


def deliver(flow: Flow, message: func.ServiceBusMessage) -> Result:
    # Returning completes the message; an exception abandons it for redelivery. Everything the
    # pipeline can decide (park, wait, retry later) it records and then returns.
    return process(Delivery.from_trigger(message, flow.queue), flow, runtime.ports())
