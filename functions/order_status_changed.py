"""Order status changed: F&O changed a production order's status; MES gets the new status, and an
older event (lower ControlNumber) never overwrites a newer one."""

import azure.functions as func

from functions.event_grid import on_event

bp = func.Blueprint()


@bp.function_name("order_status_changed")
@bp.event_grid_trigger(arg_name="event")
def order_status_changed(event: func.EventGridEvent) -> None:
    on_event("order_status_changed", event)
