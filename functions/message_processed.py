"""Message processed: F&O's message processor finished a MES message; the bridge marks it
Processed or Failed in the ledger, with the infolog, and acknowledges or rejects it to MES."""

import azure.functions as func

from functions.event_grid import on_event

bp = func.Blueprint()


@bp.function_name("message_processed")
@bp.event_grid_trigger(arg_name="event")
def message_processed(event: func.EventGridEvent) -> None:
    on_event("message_processed", event)
