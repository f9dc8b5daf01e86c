"""Output reported: the MES reports good and scrapped quantity and the finished batch produced;
F&O receives a report as finished (`ProdProductionOrderReportFinished`) and the lineage records
which batch the order produced."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("output_reported")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["output_reported"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def output_reported(message: func.ServiceBusMessage) -> None:
    on_message("output_reported", message)
