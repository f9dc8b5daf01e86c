"""Production ended: the MES ends a production order; F&O receives `ProdProductionOrderEnd`.
The order gate makes sure it overtakes nothing still waiting for the order."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import ProductionEnded
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="production_ended",
    event=ProductionEnded,
    map=mapping.production_ended,
    repeatable=False,
)

bp = func.Blueprint()


@bp.function_name("production_ended")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def production_ended(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
