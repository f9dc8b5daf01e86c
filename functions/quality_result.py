"""Quality result: the MES reports test results for a batch; F&O's quality service receives them
(custom service, path in FO_QUALITY_SERVICE_PATH, idempotent on the MES message id)."""

import azure.functions as func

from functions.inbound import deliver
from shared import mapping
from shared.messages import QualityResult
from shared.pipeline import Flow
from shared.topology import SERVICEBUS_CONNECTION

FLOW = Flow(
    name="quality_result",
    event=QualityResult,
    map=mapping.quality_result,
    repeatable=True,
)

bp = func.Blueprint()


@bp.function_name("quality_result")
@bp.service_bus_queue_trigger(
    arg_name="message", queue_name=FLOW.queue, connection=SERVICEBUS_CONNECTION, is_sessions_enabled=True
)
def quality_result(message: func.ServiceBusMessage) -> None:
    deliver(FLOW, message)
