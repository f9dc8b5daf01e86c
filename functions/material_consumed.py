"""Material consumed (pick-complete): the MES reports the raw material batches a production order
consumed; F&O receives a picking list (`ProdProductionOrderPickingList`) and the lineage records
which batches went into the order."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import MaterialConsumed
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="material_consumed",
    event=MaterialConsumed,
    map=mapping.material_consumed,
    repeatable=False,
    lineage=mapping.consumed_edges,
)

bp = func.Blueprint()


@bp.function_name("material_consumed")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def material_consumed(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
