"""Output reported: the MES reports good and scrapped quantity and the finished batch produced;
F&O receives a report as finished (`ProdProductionOrderReportFinished`) and the lineage records
which batch the order produced."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import OutputReported
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="output_reported",
    event=OutputReported,
    map=mapping.output_reported,
    repeatable=False,
    lineage=mapping.produced_edges,
)

bp = func.Blueprint()


@bp.function_name("output_reported")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def output_reported(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
