"""One blueprint per flow. `function_app.py` registers every blueprint listed here."""

from __future__ import annotations

import azure.functions as func

from functions import (
    console,
    inventory_adjusted,
    inventory_moved,
    material_consumed,
    message_processed,
    operation_reported,
    operations_http,
    order_released,
    order_status_changed,
    output_reported,
    production_ended,
    production_started,
    quality_result,
)

INBOUND = [
    production_started,
    material_consumed,
    operation_reported,
    output_reported,
    production_ended,
    quality_result,
    inventory_moved,
    inventory_adjusted,
]
OUTBOUND = [order_released, order_status_changed, message_processed]
BLUEPRINTS: list[func.Blueprint] = [module.bp for module in INBOUND + OUTBOUND] + [operations_http.bp, console.bp]
