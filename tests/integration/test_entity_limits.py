"""Azure's entity limits, which Azurite does not enforce: the store measures every write first
(sizes as Azure counts them: strings in UTF-16 code units), so a local run finds an overflow too."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, UpdateMode
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import EntityTooLarge
from shared.store.tables import (
    ENTITY_BYTES,
    STRING_UNITS,
    entity_size,
    get_text,
    put_text,
    safe_key,
    table,
    utf16_parts,
    utf16_units,
)

pytestmark = pytest.mark.integration


def test_sizes_are_counted_as_azure_counts_them():
    assert utf16_units("a") == 1 and utf16_units("é") == 1 and utf16_units("😀") == 2 and utf16_units("\ud800") == 1
    # The documented formula: 4 bytes, the keys at 2 bytes a unit, and per property 8 bytes, its name
    # at 2 bytes a unit and its value (a string: 2 bytes a unit + 4), so "Mountain View" is 8 + 14 + 30.
    assert entity_size({"PartitionKey": "", "RowKey": "", "Address": "Mountain View"}) == 4 + 8 + 14 + 30
    typed = {
        "PartitionKey": "p",
        "RowKey": "r",
        "I": 1,
        "L": EntityProperty(2**40, EdmType.INT64),
        "B": True,
        "D": 1.5,
        "X": b"abc",
    }
    assert entity_size(typed) == 4 + 4 + (8 + 2 + 4) + (8 + 2 + 8) + (8 + 2 + 1) + (8 + 2 + 8) + (8 + 2 + 7)


@given(st.text(max_size=300), st.integers(2, 40))
def test_a_text_cut_into_parts_is_whole_again_and_no_part_splits_a_pair(text, units):
    parts = utf16_parts(text, units)
    assert "".join(parts) == text
    assert all(utf16_units(p) <= units for p in parts)
    [p.encode("utf-16-le") for p in parts]  # a split pair would raise here (the text holds no lone surrogate)


def test_a_long_text_is_stored_whole_in_parts_and_a_shorter_one_blanks_them(table_service, table_prefix):
    client = table(table_service, table_prefix + "Texts")
    emoji = "😀" * 40_000  # 80,000 UTF-16 code units: three string properties
    entity = {"PartitionKey": "p", "RowKey": "r"}
    put_text(entity, "Infolog", emoji)
    client.create_entity(entity)
    stored = client.get_entity("p", "r")
    assert get_text(stored, "Infolog") == emoji and stored["InfologParts"] == 3
    shorter = {"PartitionKey": "p", "RowKey": "r"}
    put_text(shorter, "Infolog", "short", stored_parts=3)
    client.update_entity(shorter, mode=UpdateMode.MERGE)
    again = client.get_entity("p", "r")
    assert get_text(again, "Infolog") == "short" and again["Infolog1"] == ""


def test_an_entity_over_one_mebibyte_is_refused_before_it_is_written(table_service, table_prefix):
    client = table(table_service, table_prefix + "Limits")
    row = uuid.uuid4().hex
    huge = {"PartitionKey": "p", "RowKey": row, **{f"Text{n}": "a" * STRING_UNITS for n in range(17)}}
    assert entity_size(huge) > ENTITY_BYTES  # Azurite itself would take it
    for write in (
        lambda: client.create_entity(huge),
        lambda: client.upsert_entity(huge, mode=UpdateMode.MERGE),
        lambda: client.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "ok"}), ("upsert", huge)]),
    ):
        with pytest.raises(EntityTooLarge, match="1 MiB"):
            write()
    with pytest.raises(ResourceNotFoundError):
        client.get_entity("p", row)
    with pytest.raises(ResourceNotFoundError):
        client.get_entity("p", "ok")  # the transaction's other entity was not written either
    fits = {"PartitionKey": "p", "RowKey": row, **{f"Text{n}": "a" * STRING_UNITS for n in range(15)}}
    client.create_entity(fits)
    assert len(client.get_entity("p", row)["Text14"]) == STRING_UNITS


def test_a_property_over_64_kib_and_too_many_properties_are_refused(table_service, table_prefix):
    client = table(table_service, table_prefix + "Limits")
    with pytest.raises(EntityTooLarge, match="property Text is"):
        client.create_entity({"PartitionKey": "p", "RowKey": "a", "Text": "😀" * (STRING_UNITS // 2 + 1)})
    with pytest.raises(EntityTooLarge, match="253 properties"):
        client.create_entity({"PartitionKey": "p", "RowKey": "b", **{f"P{n}": n for n in range(253)}})
    client.create_entity({"PartitionKey": "p", "RowKey": "c", **{f"P{n}": n for n in range(252)}})


def test_keys_are_measured_in_utf16_units(table_service, table_prefix):
    client = table(table_service, table_prefix + "Limits")
    for value in ("😀" * 400, "é" * 2000, "\ud83d" * 600):
        key = safe_key(value)
        assert utf16_units(key) <= 512
        client.create_entity({"PartitionKey": "p", "RowKey": key})


_values = st.one_of(
    st.text(max_size=40),
    st.builds(lambda n, ch: ch * n, st.integers(0, 40000), st.sampled_from("xé😀")),
    st.builds(lambda n: b"\0" * n, st.integers(0, 70000)),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
    st.booleans(),
)


@given(
    properties=st.dictionaries(st.text(alphabet="abcdefghij", min_size=1, max_size=8), _values, max_size=30),
    row_key=st.one_of(st.text(max_size=30), st.builds(lambda n, ch: ch * n, st.integers(200, 600), st.sampled_from("é😀"))),
)
def test_the_quick_check_of_a_small_write_never_lets_through_what_the_full_check_refuses(properties, row_key):
    import json

    from shared.store.table_rest import entity_json
    from shared.store.tables import check_entity, check_write

    entity = {"PartitionKey": "p", "RowKey": row_key, **properties}
    body = json.dumps(entity_json(entity), separators=(",", ":")).encode("ascii")
    try:
        check_entity(entity)
    except EntityTooLarge:
        with pytest.raises(EntityTooLarge):
            check_write(entity, body)


@given(
    properties=st.dictionaries(
        st.text(alphabet="abcdefghij", min_size=1, max_size=8),
        st.one_of(st.text(max_size=200), st.builds(lambda n, ch: ch * n, st.integers(0, 9000), st.sampled_from("xé😀\x00"))),
        max_size=12,
    ),
    room=st.integers(1000, 200_000),
)
def test_the_ledger_s_quick_bound_is_above_both_measures(properties, room):
    from shared.store.ledger import _surely_fits
    from shared.store.tables import wire_size

    entity = {"PartitionKey": "p", "RowKey": "r", **properties}
    if _surely_fits(entity, (), room):
        assert entity_size(entity) <= room and wire_size(entity) <= room
