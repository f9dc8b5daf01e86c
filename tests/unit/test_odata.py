import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtools.fo_emulator import odata as server_odata
from shared.fo import odata


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("P000123", "'P000123'"),
        ("O'Brien", "'O''Brien'"),
        ("''", "''''''"),
        ("", "''"),
        ("Ünïcødé ✓", "'Ünïcødé ✓'"),
        (42, "42"),
        (2.5, "2.5"),
        (True, "true"),
        (None, "null"),
    ],
)
def test_literal(value, expected):
    assert odata.literal(value) == expected


def test_non_finite_number_has_no_literal():
    with pytest.raises(ValueError, match="no literal"):
        odata.literal(float("nan"))


def test_star_in_eq_is_narrowed_to_the_exact_value():
    condition = odata.eq("ProductionOrderNumber", "P0'01*")
    assert condition.text == "ProductionOrderNumber eq 'P0''01*'"
    assert condition.matches({"ProductionOrderNumber": "P0'01*"})
    assert not condition.matches({"ProductionOrderNumber": "P0'0123"})


def test_plain_value_needs_no_narrowing():
    assert odata.eq("ItemNumber", "A0001").exact == {}


def test_combined_filter_keeps_every_exact_check():
    both = odata.eq("a", "x*") & odata.eq("b", "y")
    assert both.text == "(a eq 'x*') and (b eq 'y')"
    assert both.exact == {"a": "x*"}


def test_property_names_are_checked():
    with pytest.raises(ValueError):
        odata.eq("a eq 'x' or b", "y")


def test_key_segment_is_quoted_and_percent_encoded():
    segment = odata.key_segment({"dataAreaId": "usmf", "ProductionOrderNumber": "P0'01/#?%27"})
    assert segment == "(dataAreaId='usmf',ProductionOrderNumber='P0''01%2F%23%3F%2527')"


@given(st.text())
def test_literal_reads_back_as_the_same_string_in_an_odata_parser(value):
    tokens = server_odata.tokenize(odata.literal(value))
    assert len(tokens) == 1
    assert tokens[0].kind == "string"
    assert tokens[0].text[1:-1].replace("''", "'") == value


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=30))
def test_an_id_can_never_widen_a_query(value):
    rows = [{"Id": value}, {"Id": value + "x"}, {"Id": "x" + value}, {"Id": "other"}, {"Id": "' or 1 eq 1"}]
    condition = odata.eq("Id", value)
    predicate = server_odata.parse_filter(condition.text, {"Id"})
    served = [row for row in rows if predicate(row)]
    narrowed = [row for row in served if condition.matches(row)]
    assert all(row["Id"].casefold() == value.casefold() for row in narrowed)
    assert {"Id": value} in narrowed
