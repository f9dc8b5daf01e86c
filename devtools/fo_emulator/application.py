"""The F&O application behind the HTTP surface: entity store, MES message processor, quality
service and business events. Thread-safe: one lock guards the state."""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import math
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from devtools.fo_emulator.contracts import ENTITY_TYPES, check_entity, schemas, validate_content
from devtools.fo_emulator.odata import ODataError
from devtools.fo_emulator.plant import PlantSpec, Row, seed_plant

ENTITY_KEYS: dict[str, tuple[str, ...]] = {
    "OperationalSites": ("dataAreaId", "SiteId"),
    "Warehouses": ("dataAreaId", "WarehouseId"),
    "ReleasedProductsV2": ("dataAreaId", "ItemNumber"),
    "ItemBatches": ("dataAreaId", "ItemNumber", "BatchNumber"),
    "ProductionOrderHeaders": ("dataAreaId", "ProductionOrderNumber"),
    "ProductionOrderBillOfMaterialLines": ("dataAreaId", "ProductionOrderNumber", "LineNumber"),
    "ProductionOrderRouteOperations": ("dataAreaId", "OperationNumber", "OperationPriority", "ProductionOrderNumber"),
    "InventoryTransferJournalHeaders": ("dataAreaId", "JournalNumber"),
    "InventoryTransferJournalEntries": ("dataAreaId", "JournalNumber", "LineNumber"),
    "InventoryMovementJournalHeaders": ("dataAreaId", "JournalNumber"),
    "InventoryMovementJournalEntries": ("dataAreaId", "JournalNumber", "LineNumber"),
    "InventoryJournalNames": ("dataAreaId", "JournalNameId"),
}
# The writable entities: their fields come with the Edm types of F&O's $metadata (contracts.ENTITY_TYPES).
ENTITY_FIELDS: dict[str, set[str]] = {name: set(types) for name, types in ENTITY_TYPES.items()}
JOURNAL_TYPES = {
    "InventoryTransferJournalHeaders": "Transfer",
    "InventoryMovementJournalHeaders": "Movement",
}
# ProdStatus as OData serializes it, by member name (Microsoft's ProdStatus enumeration: Created,
# CostEstimated, Scheduled, Released, StartedUp "Started", ReportedFinished, Completed "Ended").
STATUS_FLOW = ["Created", "Scheduled", "Released", "StartedUp", "ReportedFinished", "Completed"]
MESSAGE_PROCESSED_EVENT = "SysMessageProcessorMessageProcessedBusinessEvent"
ORDER_RELEASED_EVENT = "ProductionOrderReleasedBusinessEvent"
ORDER_STATUS_EVENT = "ProductionOrderStatusChangedBusinessEvent"


class WriteError(Exception):
    """An X++ write exception: the answer carries an infolog."""

    operation_index = -1  # which operation of a changeset failed

    def __init__(self, entity: str, infolog: str) -> None:
        super().__init__(infolog)
        self.entity = entity
        self.infolog = infolog


def _key(values: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(str(values.get(k, "")).casefold() if isinstance(values.get(k), str) else values.get(k) for k in keys)


@dataclass
class ProcessorMessage:
    id: int
    company: str
    queue: str
    message_type: str
    content: str
    order: str
    received_at: float
    state: str = "Queued"
    attempts: int = 0
    infolog: list[str] = field(default_factory=list)
    processed_at: float | None = None
    depends_on: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "MessageId": self.id,
            "CompanyId": self.company,
            "MessageQueue": self.queue,
            "MessageType": self.message_type,
            "MessageContent": self.content,
            "ProductionOrderNumber": self.order,
            "MessageState": self.state,
            "Attempts": self.attempts,
            "MessageInfolog": "\n".join(self.infolog),
            "DependsOn": self.depends_on,
        }


@dataclass
class OrderLedger:
    """What the MES messages did to one production order (what the tests compare)."""

    started_quantity: float = 0.0
    consumed: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    reported_good: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    reported_error: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    route_hours: dict[int, float] = field(default_factory=lambda: collections.defaultdict(float))
    route_good: dict[int, float] = field(default_factory=lambda: collections.defaultdict(float))
    processed_types: list[str] = field(default_factory=list)


EventSink = Callable[[list[dict[str, Any]]], None]


@dataclass
class EventDelivery:
    """Business events to Event Grid: at least once, optionally doubled and reordered.

    A subscriber that fails gets the event again later, with a growing delay, as Event Grid
    retries (up to `max_attempts`, then the event is dead-lettered); other events keep flowing.
    Several deliveries run at once (`workers`), as Event Grid's do: no order is promised.
    """

    sinks: list[EventSink] = field(default_factory=list)
    workers: int = 4
    duplicate_rate: float = 0.0
    reorder_window: int = 0
    as_object: bool = False
    max_attempts: int = 30
    retry_delay_s: float = 0.05
    retry_max_delay_s: float = 10.0
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    delivered: list[dict[str, Any]] = field(default_factory=list)
    dead_lettered: list[dict[str, Any]] = field(default_factory=list)
    #: every business event F&O raised, in raising order (what a check counts against)
    raised: list[dict[str, Any]] = field(default_factory=list)
    retries: int = 0
    doubled: int = 0  # events delivered twice
    reordered: int = 0  # events delivered ahead of earlier ones
    _queue: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    _later: list[tuple[float, int, dict[str, Any], EventSink, int]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)
    _cv: threading.Condition = field(default_factory=threading.Condition)
    _stop: bool = False
    _busy: int = 0

    def enqueue(self, event: dict[str, Any]) -> None:
        with self._cv:
            self.raised.append(event)
            self._queue.append(event)
            self._cv.notify_all()

    def _take(self) -> tuple[dict[str, Any], list[tuple[EventSink, int]]] | None:
        """The next event and the subscribers (with their attempt) to deliver it to."""
        with self._cv:
            while not self._stop:
                now = time.monotonic()
                if self._later and self._later[0][0] <= now:
                    _, _, envelope, sink, attempt = heapq.heappop(self._later)
                    self._busy += 1
                    return envelope, [(sink, attempt)]
                if self._queue:
                    break
                self._cv.wait(min(0.2, self._later[0][0] - now) if self._later else 0.2)
            if self._stop:
                return None
            if self.reorder_window > 1 and len(self._queue) > 1:
                index = self.rng.randrange(min(self.reorder_window, len(self._queue)))
                self.reordered += index > 0
                self._queue.rotate(-index)
                event = self._queue.popleft()
                self._queue.rotate(index)
            else:
                event = self._queue.popleft()
            self._busy += 1
            envelope = self.envelope(event)
            copies = 2 if self.rng.random() < self.duplicate_rate else 1
            self.doubled += copies - 1
            return envelope, [(sink, 0) for sink in list(self.sinks) for _ in range(copies)]

    def run(self) -> None:
        while (taken := self._take()) is not None:
            envelope, targets = taken
            try:
                for sink, attempt in targets:
                    self._deliver(envelope, sink, attempt)
            finally:
                with self._cv:
                    self._busy -= 1
                    self._cv.notify_all()

    def _deliver(self, envelope: dict[str, Any], sink: EventSink, attempt: int) -> None:
        try:
            sink([envelope])
        except Exception:
            with self._cv:
                if attempt + 1 >= self.max_attempts:
                    self.dead_lettered.append(envelope)
                    return
                self.retries += 1
                delay = min(self.retry_max_delay_s, self.retry_delay_s * 2**attempt)
                heapq.heappush(self._later, (time.monotonic() + delay, next(self._order), envelope, sink, attempt + 1))
            return
        with self._cv:
            self.delivered.append(envelope)

    def envelope(self, event: dict[str, Any]) -> dict[str, Any]:
        data: Any = event if self.as_object else json.dumps(event)
        return {
            "id": event["EventId"],
            "topic": "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.EventGrid/topics/fo-events",
            "subject": event.get("BusinessEventId", ""),
            "eventType": event.get("BusinessEventId", ""),
            "eventTime": event.get("EventTimeIso8601", datetime.now(UTC).isoformat()),
            "data": data,
            "dataVersion": "1.0",
            "metadataVersion": "1",
        }

    def drain(self, timeout: float = 10.0) -> bool:
        """True once every event is delivered, retries included (or dead-lettered)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._queue or self._busy or self._later:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.05))
        return True

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()


class FoApplication:
    def __init__(
        self,
        plant: PlantSpec,
        *,
        journal_version: str = "2024",
        picking_batch_field: str = "ItemBatchNumber",
        validate_on_send: bool = True,
        fo_url: str = "https://fo.local",
    ) -> None:
        self.lock = threading.RLock()
        self.tables = seed_plant(plant)
        self.index: dict[str, dict[tuple[Any, ...], Row]] = {
            name: {_key(row, ENTITY_KEYS[name]): row for row in rows} for name, rows in self.tables.items()
        }
        self.fields: dict[str, set[str]] = {
            name: set().union(*(row.keys() for row in rows)) | ENTITY_FIELDS.get(name, set())
            for name, rows in self.tables.items()
        }
        self.schema = schemas(journal_version, picking_batch_field)
        self.picking_batch_field = picking_batch_field
        self.validate_on_send = validate_on_send
        self.fo_url = fo_url
        self.messages: list[ProcessorMessage] = []
        self.pending: dict[tuple[str, str], collections.deque[ProcessorMessage]] = collections.defaultdict(collections.deque)
        self.order_ledgers: dict[tuple[str, str], OrderLedger] = collections.defaultdict(OrderLedger)
        self.quality_results: dict[str, dict[str, Any]] = {}
        self.events = EventDelivery()
        self._control_number = 5637144576
        self._rng = random.Random(plant.seed)
        self.send_message_calls = 0

    # --- entities -------------------------------------------------------------------------------
    def rows(self, entity_set: str) -> list[Row]:
        if entity_set not in self.tables:
            raise ODataError(404, f"No HTTP resource was found that matches the request URI '/data/{entity_set}'.")
        return self.tables[entity_set]

    def find(self, entity_set: str, **keys: Any) -> Row | None:
        return self.index[entity_set].get(_key(keys, ENTITY_KEYS[entity_set]))

    def create_many(self, operations: list[tuple[str, dict[str, Any]]]) -> list[Row]:
        """Create every row or none (an atomic changeset)."""
        with self.lock:
            created: list[tuple[str, Row]] = []
            try:
                for index, (entity_set, body) in enumerate(operations):
                    try:
                        created.append((entity_set, self._create(entity_set, body)))
                    except (WriteError, ODataError) as exc:
                        exc.operation_index = index
                        raise
            except Exception:
                for entity_set, row in reversed(created):
                    self.tables[entity_set].remove(row)
                    del self.index[entity_set][_key(row, ENTITY_KEYS[entity_set])]
                raise
            return [row for _, row in created]

    def _create(self, entity_set: str, body: dict[str, Any]) -> Row:
        validators = {
            "InventoryTransferJournalHeaders": self._check_journal_header,
            "InventoryTransferJournalEntries": self._check_transfer_line,
            "InventoryMovementJournalHeaders": self._check_journal_header,
            "InventoryMovementJournalEntries": self._check_movement_line,
        }
        if entity_set not in validators:
            if entity_set in self.tables:
                raise ODataError(405, f"Entity set {entity_set} is read-only in this emulator.")
            raise ODataError(404, f"No HTTP resource was found that matches the request URI '/data/{entity_set}'.")
        # OData deserialisation comes first: an unknown property or a wrong type never reaches X++.
        problems = check_entity(entity_set, body)
        if problems:
            raise ODataError(400, " ".join(problems))
        row = dict(body)
        validators[entity_set](entity_set, row)
        key = _key(row, ENTITY_KEYS[entity_set])
        if key in self.index[entity_set]:
            raise WriteError(entity_set, f"Cannot create a record in {entity_set}. The record already exists.")
        self.tables[entity_set].append(row)
        self.index[entity_set][key] = row
        return row

    def _require(self, entity: str, row: Row, *names: str) -> None:
        for name in names:
            if row.get(name) in (None, ""):
                raise WriteError(entity, f"Field '{name}' must be filled in.")

    def _check_journal_header(self, entity: str, row: dict[str, Any]) -> None:
        self._require(entity, row, "dataAreaId", "JournalNameId", "JournalNumber")
        row["dataAreaId"] = str(row["dataAreaId"]).lower()
        name = self.find("InventoryJournalNames", dataAreaId=row["dataAreaId"], JournalNameId=row["JournalNameId"])
        if not name:
            raise WriteError(entity, f"Journal name {row['JournalNameId']} does not exist.")
        if name["JournalType"] != JOURNAL_TYPES[entity]:
            # Each header entity covers one journal type; a name of another type is refused.
            raise WriteError(
                entity,
                f"Journal name {row['JournalNameId']} is a {name['JournalType']} journal, not a {JOURNAL_TYPES[entity]} journal.",
            )
        row.setdefault("IsPosted", "No")
        row.setdefault("Description", "")

    def _check_line_head(self, entity: str, header_entity: str, row: dict[str, Any]) -> str:
        company = row["dataAreaId"] = str(row["dataAreaId"]).lower()
        if not self.find(header_entity, dataAreaId=company, JournalNumber=row["JournalNumber"]):
            raise WriteError(entity, f"Journal {row['JournalNumber']} does not exist.")
        if not self.find("ReleasedProductsV2", dataAreaId=company, ItemNumber=row["ItemNumber"]):
            raise WriteError(entity, f"Item number {row['ItemNumber']} does not exist.")
        if row["InventoryQuantity"] == 0:
            raise WriteError(entity, "Quantity must be other than zero.")
        return company

    def _check_place(self, entity: str, company: str, item: str, site: Any, warehouse: Any, batch: Any) -> None:
        found = self.find("Warehouses", dataAreaId=company, WarehouseId=warehouse)
        if not found or found["OperationalSiteId"] != site:
            raise WriteError(entity, f"Warehouse {warehouse} does not belong to site {site}.")
        if batch and not self.find("ItemBatches", dataAreaId=company, ItemNumber=item, BatchNumber=batch):
            raise WriteError(entity, f"Batch number {batch} does not exist for item {item}.")

    def _check_movement_line(self, entity: str, row: dict[str, Any]) -> None:
        self._require(
            entity,
            row,
            "dataAreaId",
            "JournalNumber",
            "LineNumber",
            "ItemNumber",
            "InventoryQuantity",
            "TransactionDate",
            "InventorySiteId",
            "InventoryWarehouseId",
            "OffsetMainAccountIdDisplayValue",
        )
        company = self._check_line_head(entity, "InventoryMovementJournalHeaders", row)
        self._check_place(
            entity, company, row["ItemNumber"], row["InventorySiteId"], row["InventoryWarehouseId"], row.get("ItemBatchNumber")
        )

    def _check_transfer_line(self, entity: str, row: dict[str, Any]) -> None:
        self._require(
            entity,
            row,
            "dataAreaId",
            "JournalNumber",
            "LineNumber",
            "ItemNumber",
            "InventoryQuantity",
            "TransactionDate",
            "SourceInventorySiteId",
            "SourceWarehouseId",
            "DestinationInventorySiteId",
            "DestinationWarehouseId",
        )
        company = self._check_line_head(entity, "InventoryTransferJournalHeaders", row)
        item = row["ItemNumber"]
        source_batch, target_batch = row.get("SourceItemBatchNumber"), row.get("DestinationItemBatchNumber")
        self._check_place(entity, company, item, row["SourceInventorySiteId"], row["SourceWarehouseId"], source_batch)
        if target_batch and not source_batch:
            raise WriteError(entity, "A batch-controlled transfer needs the batch it is taken from.")
        place = ("Site", "Warehouse", "WarehouseLocation", "ItemBatch")
        fields = ("InventorySiteId", "WarehouseId", "WarehouseLocationId", "ItemBatchNumber")
        if all(str(row.get("Source" + f) or "").casefold() == str(row.get("Destination" + f) or "").casefold() for f in fields):
            raise WriteError(entity, f"The from and to dimensions ({', '.join(place)}) are the same; nothing is transferred.")
        found = self.find("Warehouses", dataAreaId=company, WarehouseId=row["DestinationWarehouseId"])
        if not found or found["OperationalSiteId"] != row["DestinationInventorySiteId"]:
            raise WriteError(
                entity,
                f"Warehouse {row['DestinationWarehouseId']} does not belong to site {row['DestinationInventorySiteId']}.",
            )
        if target_batch and not self.find("ItemBatches", dataAreaId=company, ItemNumber=item, BatchNumber=target_batch):
            raise WriteError(entity, f"Batch number {target_batch} does not exist for item {item}.")

    # --- MES message service --------------------------------------------------------------------
    def send_message(self, body: Any, companies: set[str]) -> int:
        """SendMessage: validate the envelope (and content), queue, return the message id."""
        if not isinstance(body, dict):
            raise ODataError(400, "The request body must be a JSON object.")
        expected = {"_companyId", "_messageQueue", "_messageType", "_messageContent"}
        missing = sorted(expected - set(body))
        extra = sorted(set(body) - expected)
        if missing or extra:
            raise ODataError(
                400,
                f"Parameters do not match SendMessage(_companyId, _messageQueue, _messageType, _messageContent): "
                f"missing {missing}, unexpected {extra}.",
            )
        company = str(body["_companyId"]).lower()
        if company not in companies:
            raise ODataError(400, f"Company {body['_companyId']} does not exist.")
        if body["_messageQueue"] != "JmgMES3P":
            raise ODataError(400, f"Message queue {body['_messageQueue']} does not exist.")
        if not isinstance(body["_messageContent"], str):
            raise ODataError(400, "_messageContent must be a string holding JSON.")
        message_type = str(body["_messageType"])
        if message_type not in self.schema:
            raise ODataError(400, f"Message type {message_type} is not registered for the message queue JmgMES3P.")
        try:
            content = json.loads(body["_messageContent"], parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ODataError(400, f"_messageContent is not valid JSON: {exc}") from None
        if self.validate_on_send:
            problems = validate_content(message_type, content, self.schema)
            if problems:
                raise ODataError(400, "Infolog: " + " ".join(problems))
        order = str(content.get("ProductionOrderNumber", "")) if isinstance(content, dict) else ""
        with self.lock:
            self.send_message_calls += 1
            message = ProcessorMessage(
                id=len(self.messages) + 1,
                company=company,
                queue=body["_messageQueue"],
                message_type=message_type,
                content=body["_messageContent"],
                order=order,
                received_at=time.time(),
            )
            if message_type == "ProdProductionOrderReportFinished":
                starts = [m for m in self.pending[(company, order.casefold())] if m.message_type == "ProdProductionOrderStart"]
                message.depends_on = starts[-1].id if starts else None
            self.messages.append(message)
            self.pending[(company, order.casefold())].append(message)
        return message.id

    def cancel_message(self, message_id: int) -> ProcessorMessage:
        with self.lock:
            message = self.messages[message_id - 1]
            if message.state not in ("Queued", "Failed"):
                raise ODataError(400, f"Message {message_id} is {message.state} and cannot be cancelled.")
            message.state = "Cancelled"
            queue = self.pending[(message.company, message.order.casefold())]
            if message in queue:
                queue.remove(message)
            return message

    def reprocess_message(self, message_id: int) -> ProcessorMessage:
        """An operator's re-process of a Failed message (once the cause is fixed): it is Queued
        again at the head of its order's queue, and the next batch run processes it."""
        with self.lock:
            message = self.messages[message_id - 1]
            if message.state != "Failed":
                raise ODataError(400, f"Message {message_id} is {message.state}; only a failed message can be re-processed.")
            message.state = "Queued"
            message.attempts = 0
            queue = self.pending[(message.company, message.order.casefold())]
            if message not in queue:
                queue.appendleft(message)
            return message

    def process_queue(self) -> int:
        """One run of the message processor batch job; returns how many messages changed state."""
        changed = 0
        with self.lock:
            for key in list(self.pending):
                queue = self.pending[key]
                while queue:
                    head = queue[0]
                    if head.state == "Failed":
                        break  # a failed message blocks the order until it is cancelled
                    if head.depends_on is not None and self.messages[head.depends_on - 1].state not in ("Processed", "Cancelled"):
                        break
                    head.attempts += 1
                    try:
                        self._apply(head)
                    except WriteError as exc:
                        head.infolog.append(f"Attempt {head.attempts}: {exc.infolog}")
                        if head.attempts >= 3:
                            head.state = "Failed"
                            head.processed_at = time.time()
                            self._raise_message_event(head)
                            changed += 1
                        break
                    head.state = "Processed"
                    head.processed_at = time.time()
                    queue.popleft()
                    self._raise_message_event(head)
                    changed += 1
                if not queue:
                    del self.pending[key]
        return changed

    def _order(self, message: ProcessorMessage) -> Row:
        order = self.find("ProductionOrderHeaders", dataAreaId=message.company, ProductionOrderNumber=message.order)
        if order is None:
            raise WriteError("ProdTable", f"Production order {message.order} does not exist.")
        return order

    def _set_status(self, order: Row, status: str) -> None:
        previous = order["ProductionOrderStatus"]
        if previous == status:
            return
        order["ProductionOrderStatus"] = status
        self._raise_event(
            ORDER_STATUS_EVENT,
            order["dataAreaId"],
            {
                "ProductionOrderNumber": order["ProductionOrderNumber"],
                "ProductionOrderStatus": status,
                "PreviousProductionOrderStatus": previous,
                "ItemNumber": order["ItemNumber"],
            },
        )

    def _apply(self, message: ProcessorMessage) -> None:
        content = json.loads(message.content, parse_constant=_refuse_constant)
        problems = validate_content(message.message_type, content, self.schema)
        if problems:
            raise WriteError("SysMessage", " ".join(problems))
        order = self._order(message)
        status = order["ProductionOrderStatus"]
        ledger = self.order_ledgers[(message.company, order["ProductionOrderNumber"])]
        kind = message.message_type
        if kind == "ProdProductionOrderStart":
            if status not in ("Released", "StartedUp"):
                raise WriteError("ProdTable", f"Production order {message.order} has status {status} and cannot be started.")
            quantity = _non_negative(content.get("StartedQuantity", order["ScheduledQuantity"]), "StartedQuantity")
            ledger.started_quantity += quantity
            self._set_status(order, "StartedUp")
        elif status not in ("StartedUp", "ReportedFinished"):
            raise WriteError("ProdTable", f"Production order {message.order} has status {status}; it must be started first.")
        elif kind == "ProdProductionOrderPickingList":
            changes: list[tuple[str, float]] = []
            for line in content["PickingListLines"]:
                item = line["ItemNumber"]
                if not self.find("ReleasedProductsV2", dataAreaId=message.company, ItemNumber=item):
                    raise WriteError("ProdJournalBOM", f"Item number {item} does not exist.")
                batch = line.get(self.picking_batch_field, "") if self.picking_batch_field else ""
                if batch and not self.find("ItemBatches", dataAreaId=message.company, ItemNumber=item, BatchNumber=batch):
                    raise WriteError("ProdJournalBOM", f"Batch number {batch} does not exist for item {item}.")
                quantity = _non_negative(
                    line.get("ConsumptionBOMQuantity", line.get("ConsumptionInventoryQuantity", 0)), "ConsumptionBOMQuantity"
                )
                changes.append((f"{item}/{batch}", quantity))
            for key, quantity in changes:
                ledger.consumed[key] += quantity
        elif kind == "ProdProductionOrderRouteCard":
            operations = {
                int(r["OperationNumber"])
                for r in self.tables["ProductionOrderRouteOperations"]
                if r["dataAreaId"] == message.company and r["ProductionOrderNumber"].casefold() == message.order.casefold()
            }
            checked = []
            for line in content["RouteCardLines"]:
                number = line["OperationNumber"]
                if number not in operations:
                    raise WriteError("ProdJournalRoute", f"Operation {number} does not exist on the route of {message.order}.")
                checked.append(
                    (
                        number,
                        _non_negative(line.get("Hours", 0), "Hours"),
                        _non_negative(line.get("GoodQuantity", 0), "GoodQuantity"),
                    )
                )
            for number, hours, good in checked:
                ledger.route_hours[number] += hours
                ledger.route_good[number] += good
        elif kind == "ProdProductionOrderReportFinished":
            done = False
            staged = []
            for line in content["ReportFinishedLines"]:
                item = line.get("ItemNumber") or order["ItemNumber"]
                if item != order["ItemNumber"] and line.get("ProductionType") not in ("Co_Product", "By_Product"):
                    raise WriteError("ProdJournalProd", f"Item {item} is not produced by {message.order}.")
                good = _non_negative(line.get("ReportedGoodQuantity", 0), "ReportedGoodQuantity")
                error = _non_negative(line.get("ReportedErrorQuantity", 0), "ReportedErrorQuantity")
                staged.append((item, line.get("ItemBatchNumber", ""), good, error))
                done = done or line.get("EndJob") == "Yes"
            for item, batch, good, error in staged:
                if batch and not self.find("ItemBatches", dataAreaId=message.company, ItemNumber=item, BatchNumber=batch):
                    row = {
                        "dataAreaId": message.company,
                        "ItemNumber": item,
                        "BatchNumber": batch,
                        "ManufacturingDate": date.today().isoformat(),
                        "BatchExpirationDate": "",
                        "BatchDispositionCode": "Available",
                    }
                    self.tables["ItemBatches"].append(row)
                    self.index["ItemBatches"][_key(row, ENTITY_KEYS["ItemBatches"])] = row
                ledger.reported_good[f"{item}/{batch}"] += good
                ledger.reported_error[f"{item}/{batch}"] += error
            total = sum(ledger.reported_good.values())
            order["RemainingReportAsFinishedQuantity"] = max(0.0, order["ScheduledQuantity"] - total)
            if done or total >= order["ScheduledQuantity"]:
                self._set_status(order, "ReportedFinished")
        elif kind == "ProdProductionOrderEnd":
            if status != "ReportedFinished" and content.get("AutoReportAsFinished") != "Yes":
                raise WriteError(
                    "ProdTable", f"Production order {message.order} must be reported as finished before it can be ended."
                )
            self._set_status(order, "Completed")
        ledger.processed_types.append(kind)

    # --- quality custom service -----------------------------------------------------------------
    def report_quality(self, body: Any, companies: set[str]) -> dict[str, Any]:
        """MesQualityService.reportQualityResult: one quality result, idempotent on MesMessageId."""
        if not isinstance(body, dict) or set(body) != {"_companyId", "_result"} or not isinstance(body["_result"], dict):
            raise ODataError(400, "Parameters do not match reportQualityResult(_companyId, _result).")
        company = str(body["_companyId"]).lower()
        if company not in companies:
            raise ODataError(400, f"Company {body['_companyId']} does not exist.")
        result = body["_result"]
        required = ("MesMessageId", "ItemNumber", "BatchNumber", "TestGroupId", "Outcome", "Tests")
        missing = [name for name in required if result.get(name) in (None, "", [])]
        if missing:
            raise ODataError(400, f"Infolog: Field {missing[0]} must be filled in.")
        if result["Outcome"] not in ("Pass", "Fail"):
            raise ODataError(400, f"Infolog: '{result['Outcome']}' is not a symbol of enum InventTestOutcome (Pass, Fail).")
        with self.lock:
            existing = self.quality_results.get(result["MesMessageId"])
            if existing is not None:
                return {"QualityOrderNumber": existing["QualityOrderNumber"], "Created": False}
            if not self.find(
                "ItemBatches", dataAreaId=company, ItemNumber=result["ItemNumber"], BatchNumber=result["BatchNumber"]
            ):
                raise WriteError(
                    "InventQualityOrderTable",
                    f"Batch number {result['BatchNumber']} does not exist for item {result['ItemNumber']}.",
                )
            for test in result["Tests"]:
                if not isinstance(test, dict) or not test.get("TestId"):
                    raise ODataError(400, "Infolog: every test needs a TestId.")
                value = test.get("Value")
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
                ):
                    raise ODataError(400, f"Infolog: test {test['TestId']} has a value that is not a finite number.")
            number = f"QO-{len(self.quality_results) + 1:06d}"
            self.quality_results[result["MesMessageId"]] = {**result, "QualityOrderNumber": number, "dataAreaId": company}
            if result["Outcome"] == "Fail":
                batch = self.find(
                    "ItemBatches", dataAreaId=company, ItemNumber=result["ItemNumber"], BatchNumber=result["BatchNumber"]
                )
                if batch is not None:
                    batch["BatchDispositionCode"] = "Blocked"
            return {"QualityOrderNumber": number, "Created": True}

    # --- business events ------------------------------------------------------------------------
    def _raise_event(self, business_event_id: str, company: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        with self.lock:
            self._control_number += self._rng.randint(1, 4)  # increasing, with gaps, as documented
            now = datetime.now(UTC)
            event = {
                "BusinessEventId": business_event_id,
                "BusinessEventLegalEntity": company.upper(),
                "ContextRecordSubject": "",
                "ControlNumber": self._control_number,
                "EventId": str(uuid.uuid4()).upper(),
                "EventTime": f"/Date({int(now.timestamp() * 1000)})/",
                "EventTimeIso8601": now.isoformat().replace("+00:00", "Z"),
                "InitiatingUserAADObjectId": "{00000000-0000-0000-0000-000000000000}",
                "MajorVersion": 0,
                "MinorVersion": 0,
                "ParentContextRecordSubjects": [],
                **fields,
            }
        self.events.enqueue(event)
        return event

    def _raise_message_event(self, message: ProcessorMessage) -> None:
        processed = message.state == "Processed"
        self._raise_event(
            MESSAGE_PROCESSED_EVENT,
            message.company,
            {
                "MessageContent": message.content,
                "MessageInfolog": "\n".join(message.infolog),
                "MessageProcessingResult": "Success" if processed else "Failure",
                "MessageProcessingResultLabel": "Success" if processed else "Failure",
                "MessageProcessorMessagePageUrl": f"{self.fo_url}/?mi=SysMessageProcessorMessage&MessageId={message.id}",
                "MessageQueue": message.queue,
                "MessageQueueLabel": "Manufacturing Execution 3rd Party",
                "MessageState": message.state,
                "MessageStateLabel": message.state,
                "MessageType": message.message_type,
                "MessageTypeLabel": message.message_type,
                "MessageSource": "",
                "MessageDestination": "",
                "CompanyId": message.company.upper(),
                "OperationalSiteId": "",
                "WarehouseId": "",
                "WorkloadName": "",
            },
        )

    def release_order(self, company: str, order_number: str) -> Row:
        """What a planner's Release does: status Released and the released business event."""
        with self.lock:
            order = self.find("ProductionOrderHeaders", dataAreaId=company, ProductionOrderNumber=order_number)
            if order is None:
                raise ODataError(404, f"Production order {order_number} does not exist.")
            if STATUS_FLOW.index(order["ProductionOrderStatus"]) > STATUS_FLOW.index("Released"):
                raise ODataError(400, f"Production order {order_number} is already {order['ProductionOrderStatus']}.")
            order["ProductionOrderStatus"] = "Released"
            self._raise_event(
                ORDER_RELEASED_EVENT,
                company,
                {
                    "ProductionOrderNumber": order["ProductionOrderNumber"],
                    "ItemNumber": order["ItemNumber"],
                    "ProductionSiteId": order["ProductionSiteId"],
                    "ProductionOrderStatus": "Released",
                },
            )
            return order

    def change_status(self, company: str, order_number: str, status: str) -> Row:
        """A planner's status change in F&O (stop, cancel back to Created, end) with its event."""
        if status not in [*STATUS_FLOW, "Stopped", "Cancelled"]:
            raise ODataError(400, f"Unknown production order status {status}.")
        with self.lock:
            order = self.find("ProductionOrderHeaders", dataAreaId=company, ProductionOrderNumber=order_number)
            if order is None:
                raise ODataError(404, f"Production order {order_number} does not exist.")
            self._set_status(order, status)
            return order

    def test_event(self) -> dict[str, Any]:
        """The message F&O sends when an endpoint is activated."""
        return self._raise_event("BusinessEventsTestEndpointEvent", "", {"Message": "Test message from Dynamics 365"})

    # --- inspection -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "messages": [m.as_dict() for m in self.messages],
                "orders": {
                    f"{c}/{o}": {
                        "status": (self.find("ProductionOrderHeaders", dataAreaId=c, ProductionOrderNumber=o) or {}).get(
                            "ProductionOrderStatus"
                        ),
                        "started_quantity": ledger.started_quantity,
                        "consumed": dict(ledger.consumed),
                        "reported_good": dict(ledger.reported_good),
                        "reported_error": dict(ledger.reported_error),
                        "route_hours": {str(k): v for k, v in ledger.route_hours.items()},
                        "processed_types": list(ledger.processed_types),
                    }
                    for (c, o), ledger in self.order_ledgers.items()
                },
                # Both journal kinds: transfer numbers start with T, movement numbers with M.
                "journals": [{**r, "JournalType": JOURNAL_TYPES[name]} for name in JOURNAL_TYPES for r in self.tables[name]],
                "journal_lines": [
                    dict(r)
                    for name in ("InventoryTransferJournalEntries", "InventoryMovementJournalEntries")
                    for r in self.tables[name]
                ],
                "quality_results": list(self.quality_results.values()),
            }


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _non_negative(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise WriteError("ProdJournal", f"{name} must be a finite number that is not negative; got {value!r}.")
    return float(value)
