"""Queue and topic names, from shared/topology.json: the one place the code and infra/ read them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

_TOPOLOGY = json.loads((Path(__file__).with_name("topology.json")).read_text())

INBOUND_QUEUES: Final[dict[str, str]] = dict(_TOPOLOGY["inbound_queues"])
MES_TOPIC: Final[str] = _TOPOLOGY["mes_topic"]
MES_SUBSCRIPTION: Final[str] = _TOPOLOGY["mes_subscription"]
#: App-setting prefix of the Service Bus connection the triggers use (identity or connection string).
SERVICEBUS_CONNECTION: Final[str] = _TOPOLOGY["servicebus_connection"]
