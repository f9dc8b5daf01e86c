"""Order released: F&O released a production order; the bridge re-reads its header, BOM lines and
route operations over OData and publishes one work order to MES."""

import azure.functions as func

from functions.event_grid import on_event

bp = func.Blueprint()


@bp.function_name("order_released")
@bp.event_grid_trigger(arg_name="event")
def order_released(event: func.EventGridEvent) -> None:
    on_event("order_released", event)
