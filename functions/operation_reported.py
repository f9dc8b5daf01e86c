"""Operation reported: the MES reports time and quantities per route operation;
F&O receives a route card (`ProdProductionOrderRouteCard`)."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import OperationReported
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="operation_reported",
    event=OperationReported,
    map=mapping.operation_reported,
    repeatable=False,
)

bp = func.Blueprint()


@bp.function_name("operation_reported")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def operation_reported(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
