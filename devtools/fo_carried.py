"""Which MES events F&O's message processor holds, read from F&O's side alone (for the demo's and
the chaos run's checks): a message is one MES event's content, or (per-order aggregation) the lines
of several consecutive MES events of one order and type, in MES sequence, under one header.

The ledger's own record of what it merged is not used: a check that believed the bridge's
bookkeeping could not catch it being wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from shared.fo.client import message_content
from shared.inbound.flows import INBOUND_FLOWS
from shared.inbound.mapping import MappingOptions, SendMessage
from shared.inbound.merge import LINE_LISTS
from shared.inbound.messages import MES_EVENTS


def _header(message_type: str, content: dict[str, Any]) -> str:
    name = LINE_LISTS[message_type]
    return json.dumps({k: v for k, v in content.items() if k != name}, sort_keys=True)


def carried(
    fo_messages: Iterable[dict[str, Any]], documents: Iterable[dict[str, Any] | bytes], options: MappingOptions
) -> tuple[Counter[str], list[str]]:
    """How many F&O messages carry each MES event (by message id), and the F&O messages no run of
    MES events explains. `fo_messages` as the emulator's snapshot lists them."""
    alone: dict[str, list[str]] = defaultdict(list)
    runs: dict[tuple[str, str, str], list[tuple[int, str, SendMessage]]] = defaultdict(list)
    seen: set[str] = set()
    for document in documents:
        if not isinstance(document, dict) or document.get("message_id") in seen or document.get("type") not in INBOUND_FLOWS:
            continue
        seen.add(document["message_id"])
        call = INBOUND_FLOWS[document["type"]].map(MES_EVENTS[document["type"]].model_validate(document), options)
        if not isinstance(call, SendMessage):
            continue
        alone[hashlib.sha256(message_content(call.content).encode()).hexdigest()].append(document["message_id"])
        if call.message_type in LINE_LISTS and document.get("sequence") is not None:
            key = (call.company.lower(), call.message_type, str(call.content.get("ProductionOrderNumber", "")))
            runs[key].append((int(document["sequence"]), document["message_id"], call))
    for run in runs.values():
        run.sort(key=lambda item: item[0])
    counts: Counter[str] = Counter()
    unexplained: list[str] = []
    for message in fo_messages:
        text = str(message["MessageContent"])
        ids = alone.get(hashlib.sha256(text.encode()).hexdigest())
        if ids:
            counts[min(ids, key=lambda m: counts[m])] += 1
            continue
        found = _run(runs, message, text)
        if found is None:
            unexplained.append(
                f"F&O message {message['MessageId']} ({message['MessageType']}) is no MES event's, nor a run of them"
            )
            continue
        counts.update(found)
    return counts, unexplained


def _run(
    runs: dict[tuple[str, str, str], list[tuple[int, str, SendMessage]]], message: dict[str, Any], text: str
) -> list[str] | None:
    kind = str(message["MessageType"])
    name = LINE_LISTS.get(kind)
    if name is None:
        return None
    content = json.loads(text)
    lines, header = content.get(name, []), _header(kind, content)
    candidates = runs.get((str(message["CompanyId"]).lower(), kind, str(content.get("ProductionOrderNumber", ""))), [])
    for start in range(len(candidates)):
        taken: list[Any] = []
        for end in range(start, len(candidates)):
            sequence, _, call = candidates[end]
            if end > start and sequence != candidates[end - 1][0] + 1:
                break  # merged runs are consecutive in MES sequence
            if _header(kind, call.content) != header:
                break
            taken += call.content[name]
            if taken != lines[: len(taken)]:
                break
            if len(taken) == len(lines):
                return [candidates[i][1] for i in range(start, end + 1)]
    return None
