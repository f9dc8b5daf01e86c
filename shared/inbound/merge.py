"""Per-order aggregation: several MES messages of one production order as one F&O message (issue 20).

Pure: which of an order's waiting F&O messages may travel as one, and the one message they become.
No I/O, so the rules are property-tested (tests/unit/test_merge.py).

F&O's MES message types that carry a list of lines (docs/reference/fo-contracts.md §1.3):
`ProdProductionOrderPickingList` -> `PickingListLines`, `ProdProductionOrderRouteCard` ->
`RouteCardLines`, `ProdProductionOrderReportFinished` -> `ReportFinishedLines`. Each message is
processed by the message processor batch job on its own, and an order's messages in the order
received (§1.4). So messages of one order, one company and one type, sent one after the other,
mean the same as one message whose lines are theirs in the same order, on three conditions:
- the header is the same (every field but the lines: `ProductionOrderNumber`, `JournalNameId`);
- the lines are taken unchanged and in order;
- no two lines carry the same `LineNumber` (a line number names a line of the journal F&O makes
  of the message; two lines under one number would not be two lines any more).

Start and end carry no lines and change the order's status: they are never merged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shared.fo.client import message_content
from shared.inbound.mapping import SendMessage

#: The message types whose content is a header and a list of lines, and the list's name.
LINE_LISTS: dict[str, str] = {
    "ProdProductionOrderPickingList": "PickingListLines",
    "ProdProductionOrderRouteCard": "RouteCardLines",
    "ProdProductionOrderReportFinished": "ReportFinishedLines",
}


def content_bytes(call: SendMessage) -> int:
    """The size of `_messageContent` as sent (UTF-8)."""
    return len(message_content(call.content).encode())


def _header(call: SendMessage) -> str:
    lines = LINE_LISTS[call.message_type]
    return json.dumps({k: v for k, v in call.content.items() if k != lines}, sort_keys=True, ensure_ascii=False)


def _lines(call: SendMessage) -> list[Any]:
    lines = call.content.get(LINE_LISTS[call.message_type])
    return list(lines) if isinstance(lines, list) else []


def _line_numbers(call: SendMessage) -> list[Any]:
    return [line["LineNumber"] for line in _lines(call) if isinstance(line, dict) and line.get("LineNumber") is not None]


def mergeable(call: SendMessage) -> bool:
    """True for a message type that carries lines (a start or an end never merges)."""
    return call.message_type in LINE_LISTS and bool(_lines(call))


def merged(calls: Sequence[SendMessage]) -> SendMessage:
    """The one message `calls` become: the first one's header, every line of every call in order."""
    if not calls:
        raise ValueError("nothing to merge")
    first = calls[0]
    if len(calls) == 1:
        return first
    name = LINE_LISTS[first.message_type]
    lines = [line for call in calls for line in _lines(call)]
    return SendMessage(first.company, first.message_type, {**first.content, name: lines})


def mergeable_prefix(calls: Sequence[SendMessage], *, max_messages: int, max_content_bytes: int) -> int:
    """How many of `calls`, from the first on, may travel as one F&O message (at least 1 when there is
    a call). The order is the MES's: a call that may not join ends the run, since a later one joining
    would overtake it. The merged content stays within `max_content_bytes` (a single call is never
    refused here: it goes alone as it would have)."""
    if not calls:
        return 0
    first = calls[0]
    if not mergeable(first) or max_messages <= 1:
        return 1
    header = _header(first)
    numbers = set(_line_numbers(first))
    if len(numbers) != len(_line_numbers(first)):
        return 1
    taken = 1
    for call in calls[1:]:
        if taken >= max_messages:
            break
        if call.company != first.company or call.message_type != first.message_type or not mergeable(call):
            break
        if call.content.get("ProductionOrderNumber") != first.content.get("ProductionOrderNumber"):
            break
        if _header(call) != header:
            break
        mine = _line_numbers(call)
        if len(set(mine)) != len(mine) or numbers & set(mine):
            break
        if content_bytes(merged([*calls[:taken], call])) > max_content_bytes:
            break
        numbers |= set(mine)
        taken += 1
    return taken
