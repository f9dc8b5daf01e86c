"""Quality result: the MES reports test results for a batch; F&O's quality service receives them
(custom service, path in FO_QUALITY_SERVICE_PATH, idempotent on the MES message id)."""

import azure.functions as func

from functions.inbound import on_message
from shared.topology import INBOUND_QUEUES, SERVICEBUS_CONNECTION

bp = func.Blueprint()


@bp.function_name("quality_result")
@bp.service_bus_queue_trigger(
    arg_name="message",
    queue_name=INBOUND_QUEUES["quality_result"],
    connection=SERVICEBUS_CONNECTION,
    is_sessions_enabled=True,
)
def quality_result(message: func.ServiceBusMessage) -> None:
    on_message("quality_result", message)
