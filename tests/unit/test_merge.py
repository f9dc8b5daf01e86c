"""Per-order aggregation (issue 20): the pure rules of which waiting messages travel as one F&O
message, and that the one message means exactly the sum of its parts, in F&O (the emulator's
message processor) as well as on paper."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from devtools import mes
from devtools.fo_emulator.application import FoApplication
from devtools.fo_emulator.contracts import schemas, validate_content
from devtools.fo_emulator.plant import PlantSpec
from shared.fo.client import message_content
from shared.inbound import mapping
from shared.inbound.mapping import SendMessage
from shared.inbound.merge import LINE_LISTS, content_bytes, mergeable_prefix, merged
from shared.inbound.messages import MES_EVENTS, ProductionStarted

OPTIONS = mapping.MappingOptions(picking_batch_field="ItemBatchNumber", picking_list_journal="PickL")
quantities = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
hours = st.floats(min_value=0, max_value=10_000, allow_nan=False, allow_infinity=False)


def _call(kind: str, order: str, company: str, body: dict[str, Any]) -> SendMessage:
    event = MES_EVENTS[kind].model_validate(mes.event(kind, order, body, company=company, message_id="m-1"))
    maps: dict[str, mapping.Mapping] = {
        "material_consumed": mapping.material_consumed,
        "operation_reported": mapping.operation_reported,
        "output_reported": mapping.output_reported,
    }
    call = maps[kind](event, OPTIONS)
    assert isinstance(call, SendMessage)
    return call


consumption = st.builds(
    lambda lines: {"lines": lines},
    st.lists(
        st.fixed_dictionaries(
            {"item_number": st.sampled_from(["RM-0001", "RM-0002"]), "quantity": quantities},
            optional={"batch_number": st.sampled_from(["B1", "B2"]), "bom_line_number": st.integers(1, 6).map(float)},
        ),
        min_size=1,
        max_size=4,
    ),
)
route_card = st.builds(
    lambda lines: {"lines": lines},
    st.lists(st.fixed_dictionaries({"operation_number": st.integers(1, 5), "hours": hours}), min_size=1, max_size=3),
)
output = st.fixed_dictionaries({"item_number": st.just("FG-0001"), "good_quantity": quantities})

calls = st.lists(
    st.tuples(
        st.sampled_from(["material_consumed", "operation_reported", "output_reported"]),
        st.sampled_from(["P000001", "P000002"]),
        st.sampled_from(["USMF", "DEMF"]),
        st.data(),
    ),
    min_size=1,
    max_size=12,
)


def _draw(spec: list[tuple[str, str, str, Any]]) -> list[SendMessage]:
    bodies = {"material_consumed": consumption, "operation_reported": route_card, "output_reported": output}
    return [_call(kind, order, company, data.draw(bodies[kind])) for kind, order, company, data in spec]


@settings(max_examples=300, deadline=None)
@given(spec=calls, max_messages=st.integers(1, 12), max_bytes=st.integers(200, 4000))
def test_a_merged_message_is_its_parts_lines_in_order_and_never_crosses_an_order_a_company_or_a_flow(
    spec, max_messages, max_bytes
):
    parts = _draw(spec)
    taken = mergeable_prefix(parts, max_messages=max_messages, max_content_bytes=max_bytes)
    assert 1 <= taken <= min(len(parts), max(1, max_messages))
    group = parts[:taken]
    one = merged(group)
    first = parts[0]
    # Never across companies, orders or message types (flows).
    assert {p.company for p in group} == {first.company}
    assert {p.message_type for p in group} == {first.message_type}
    assert {p.content["ProductionOrderNumber"] for p in group} == {first.content["ProductionOrderNumber"]}
    # The sum of its parts: the first one's header, every line unchanged and in the MES order.
    name = LINE_LISTS[first.message_type]
    assert one.content[name] == [line for p in group for line in p.content[name]]
    assert {k: v for k, v in one.content.items() if k != name} == {k: v for k, v in first.content.items() if k != name}
    assert all(
        {k: v for k, v in p.content.items() if k != name} == {k: v for k, v in first.content.items() if k != name} for p in group
    )
    # No two lines under one line number (a single message goes alone as the MES wrote it).
    numbers = [line["LineNumber"] for line in one.content[name] if "LineNumber" in line]
    assert taken == 1 or len(numbers) == len(set(numbers))
    # Within the size bound, unless a single message goes alone as it always did.
    assert taken == 1 or content_bytes(one) <= max_bytes
    # F&O's contract accepts the one message as it accepts each part.
    assert validate_content(one.message_type, one.content, schemas("2024", "ItemBatchNumber")) == []
    # The run stops only for a reason: the next part could not have joined.
    if taken < len(parts) and taken < max_messages:
        extended = mergeable_prefix(parts[: taken + 1], max_messages=max_messages, max_content_bytes=max_bytes)
        assert extended == taken


def test_a_start_or_an_end_is_never_merged():
    started = ProductionStarted.model_validate(mes.event("production_started", "P1", {}, message_id="s"))
    start = mapping.production_started(started, OPTIONS)
    assert mergeable_prefix([start, start], max_messages=10, max_content_bytes=10**6) == 1


def test_colliding_line_numbers_end_the_run():
    one = _call("material_consumed", "P1", "USMF", {"lines": [{"item_number": "RM-0001", "quantity": 1, "bom_line_number": 1}]})
    two = _call("material_consumed", "P1", "USMF", {"lines": [{"item_number": "RM-0002", "quantity": 1, "bom_line_number": 2}]})
    again = _call("material_consumed", "P1", "USMF", {"lines": [{"item_number": "RM-0001", "quantity": 3, "bom_line_number": 1}]})
    assert mergeable_prefix([one, two, again, two], max_messages=10, max_content_bytes=10**6) == 2


def test_another_header_ends_the_run():
    one = _call("material_consumed", "P1", "USMF", {"lines": [{"item_number": "RM-0001", "quantity": 1}]})
    other = SendMessage(one.company, one.message_type, {**one.content, "JournalNameId": "Other"})
    assert mergeable_prefix([one, one, other, one], max_messages=10, max_content_bytes=10**6) == 2


def test_the_size_bound_and_the_count_bound():
    one = _call("material_consumed", "P1", "USMF", {"lines": [{"item_number": "RM-0001", "quantity": 1}]})
    size = content_bytes(merged([one, one, one]))
    assert mergeable_prefix([one] * 5, max_messages=10, max_content_bytes=size) == 3
    assert mergeable_prefix([one] * 5, max_messages=2, max_content_bytes=10**6) == 2
    assert mergeable_prefix([one] * 5, max_messages=1, max_content_bytes=10**6) == 1


# --- F&O's side: the emulator's message processor ---------------------------------------------


def _fo() -> tuple[FoApplication, str, list[str], list[int], str]:
    fo = FoApplication(PlantSpec(orders=2, seed=3))
    order = fo.tables["ProductionOrderHeaders"][0]
    number, company = order["ProductionOrderNumber"], order["dataAreaId"]
    items = [r["ItemNumber"] for r in fo.tables["ProductionOrderBillOfMaterialLines"] if r["ProductionOrderNumber"] == number]
    operations = [
        int(r["OperationNumber"]) for r in fo.tables["ProductionOrderRouteOperations"] if r["ProductionOrderNumber"] == number
    ]
    fo.send_message(
        {
            "_companyId": company,
            "_messageQueue": "JmgMES3P",
            "_messageType": "ProdProductionOrderStart",
            "_messageContent": json.dumps({"ProductionOrderNumber": number}),
        },
        {company},
    )
    return fo, number, items, operations, company


def _send(fo: FoApplication, company: str, call: SendMessage) -> None:
    fo.send_message(
        {
            "_companyId": company,
            "_messageQueue": "JmgMES3P",
            "_messageType": call.message_type,
            "_messageContent": message_content(call.content),
        },
        {company},
    )


@settings(max_examples=40, deadline=None)
@given(
    picks=st.lists(st.lists(st.tuples(st.integers(0, 10), quantities), min_size=1, max_size=3), min_size=2, max_size=6),
    reports=st.lists(st.lists(st.tuples(st.integers(0, 10), hours), min_size=1, max_size=3), min_size=2, max_size=6),
)
def test_f_and_o_applies_a_merged_message_as_the_sum_of_its_parts(picks, reports):
    separate, number, items, operations, company = _fo()
    together = _fo()[0]

    def consumption(lines):
        body = {"lines": [{"item_number": items[i % len(items)], "quantity": q} for i, q in lines]}
        return _call("material_consumed", number, company.upper(), body)

    def report(lines):
        body = {"lines": [{"operation_number": operations[i % len(operations)], "hours": h} for i, h in lines]}
        return _call("operation_reported", number, company.upper(), body)

    groups = [[consumption(lines) for lines in picks], [report(lines) for lines in reports]]
    for group in groups:
        for call in group:
            _send(separate, company, call)
        assert mergeable_prefix(group, max_messages=50, max_content_bytes=10**6) == len(group)
        _send(together, company, merged(group))
    separate.process_queue()
    together.process_queue()
    key = (company, number)
    a, b = separate.order_ledgers[key], together.order_ledgers[key]
    assert dict(a.consumed).keys() == dict(b.consumed).keys()
    assert all(abs(a.consumed[k] - b.consumed[k]) <= 1e-6 * max(1.0, a.consumed[k]) for k in a.consumed)
    assert all(abs(a.route_hours[k] - b.route_hours[k]) <= 1e-6 * max(1.0, a.route_hours[k]) for k in a.route_hours)
    assert len(together.messages) == 3 and all(m.state == "Processed" for m in together.messages)


def test_f_and_o_fails_a_merged_message_whole_when_one_line_is_bad():
    fo, number, items, _operations, company = _fo()
    good = _call("material_consumed", number, company.upper(), {"lines": [{"item_number": items[0], "quantity": 2}]})
    bad = _call("material_consumed", number, company.upper(), {"lines": [{"item_number": "NO-SUCH-ITEM", "quantity": 1}]})
    _send(fo, company, merged([good, bad]))
    for _ in range(3):
        fo.process_queue()
    failed = fo.messages[-1]
    assert failed.state == "Failed" and "NO-SUCH-ITEM" in " ".join(failed.infolog)
    # Nothing of it was applied: a message is processed whole or not at all.
    assert sum(fo.order_ledgers[(company, number)].consumed.values()) == 0


def test_what_the_wake_up_and_the_aggregation_choose_held_rows_by_is_in_the_held_index():
    """Both decide from the held index's description of each row (shared/store/ledger.py) before
    reading any: a field of `extra` they look at must be one the index repeats."""
    from shared.inbound import aggregate
    from shared.store.ledger import INDEXED_EXTRA

    assert aggregate.MERGE_REFUSED in INDEXED_EXTRA
    assert "Missing" in INDEXED_EXTRA  # shared/inbound/wakeup.py `_missing`
