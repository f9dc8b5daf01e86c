"""One blueprint per flow. `function_app.py` registers every blueprint listed here."""

from __future__ import annotations

import azure.functions as func

BLUEPRINTS: list[func.Blueprint] = []
