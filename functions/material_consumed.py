"""Material consumed (pick-complete): the MES reports the raw material batches a production order
consumed; F&O receives a picking list (`ProdProductionOrderPickingList`) and the lineage records
which batches went into the order."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("material_consumed")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["material_consumed"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def material_consumed(message: func.ServiceBusMessage) -> None:
    on_message("material_consumed", message)
