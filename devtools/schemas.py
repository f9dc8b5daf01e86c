"""Publish the MES contracts: `python -m devtools.schemas` writes, from the pydantic models,
schemas/mes/<type>.schema.json + <type>.example.json (what MES sends) and
schemas/mes-out/<type>.schema.json (what the bridge publishes to MES). A test fails when they are stale."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from shared.inbound.messages import MES_EVENTS
from shared.outbound.messages import OUTBOUND_MODELS

ROOT = Path(__file__).resolve().parent.parent / "schemas" / "mes"
OUT = ROOT.parent / "mes-out"

EXAMPLES: dict[str, dict[str, Any]] = {
    "production_started": {"started_quantity": 40.0, "bom_consumption": "never"},
    "material_consumed": {
        "lines": [
            {"item_number": "RM-0001", "batch_number": "B0001-002", "quantity": 2.5, "unit": "kg", "operation_number": 10},
            {"item_number": "RM-0007", "batch_number": "B0007-004", "quantity": 1.25, "unit": "kg", "consumption_ended": True},
        ]
    },
    "operation_reported": {
        "lines": [
            {
                "operation_number": 20,
                "hours": 1.75,
                "good_quantity": 40.0,
                "error_quantity": 1.0,
                "operation_completed": True,
                "worker": "000123",
                "resource": "WLD-01",
            }
        ]
    },
    "output_reported": {
        "item_number": "FG-0006",
        "batch_number": "FG0006-2611-01",
        "good_quantity": 38.0,
        "scrap_quantity": 2.0,
        "scrap_cause": "machine",
        "end_job": True,
        "warehouse": "11",
    },
    "production_ended": {"auto_report_as_finished": False},
    "quality_result": {
        "item_number": "FG-0006",
        "batch_number": "FG0006-2611-01",
        "test_group": "FINAL",
        "outcome": "pass",
        "tests": [{"test_id": "WEIGHT", "value": 12.04, "unit": "kg", "outcome": "pass"}],
    },
    "inventory_moved": {
        "item_number": "RM-0001",
        "batch_number": "B0001-002",
        "quantity": 50.0,
        "from_site": "1",
        "from_warehouse": "11",
        "from_location": "BULK-01",
        "to_site": "1",
        "to_warehouse": "12",
    },
    "inventory_adjusted": {
        "item_number": "RM-0001",
        "batch_number": "B0001-002",
        "quantity": -2.5,
        "site": "1",
        "warehouse": "11",
        "offset_account": "600140",
        "reason": "spilled at the mixer",
    },
}


def example(kind: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "message_id": f"line3-{kind}-000123",
        "type": kind,
        "schema_version": "1.0",
        "company": "USMF",
        "plant": "1",
        "occurred_at": "2026-11-23T08:14:03+01:00",
        "correlation_id": "shift-2026-11-23-A",
        "body": copy.deepcopy(EXAMPLES[kind]),  # a caller may change it: the examples stay as written
    }
    if kind not in ("quality_result", "inventory_moved", "inventory_adjusted"):
        document["production_order"] = "P000123"
        document["sequence"] = list(EXAMPLES).index(kind) + 1
    return document


def rendered() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for kind, model in MES_EVENTS.items():
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://github.com/mes-bridge/mes-bridge/schemas/mes/{kind}.schema.json"
        files[ROOT / f"{kind}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        model.model_validate(example(kind))  # an example that does not validate is a bug here
        files[ROOT / f"{kind}.example.json"] = json.dumps(example(kind), indent=2) + "\n"
    for kind, outbound in OUTBOUND_MODELS.items():
        schema = outbound.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://github.com/mes-bridge/mes-bridge/schemas/mes-out/{kind}.schema.json"
        files[OUT / f"{kind}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT.parent.parent)}")


if __name__ == "__main__":
    main()
