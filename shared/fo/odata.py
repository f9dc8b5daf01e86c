"""OData literals and filters that say exactly what the caller meant.

Two traps in F&O: a quote inside a string literal must be doubled, and F&O reads `*` inside an
`eq` string literal as a wildcard ("contains"). No escape for `*` exists, so a value with `*` is
sent with the `*` kept (the server then matches a superset: everything the literal matches with
`*` as "any characters" includes the exact value) and the rows are narrowed to the exact value on
our side. Either way the query can never be widened by an id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from urllib.parse import quote

Scalar = str | int | float | bool | None


def literal(value: Scalar | date | datetime) -> str:
    """One OData v4 literal: strings quoted with inner quotes doubled; numbers as they are."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"OData has no literal for {value!r}")
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no OData literal for {type(value).__name__}")


@dataclass(frozen=True)
class Filter:
    """A `$filter` expression plus the exact-match check for literals that carry `*`."""

    text: str
    exact: Mapping[str, Scalar] = field(default_factory=dict)

    def __and__(self, other: Filter) -> Filter:
        return Filter(f"({self.text}) and ({other.text})", {**self.exact, **other.exact})

    def matches(self, row: Mapping[str, object]) -> bool:
        return all(row.get(name) == value for name, value in self.exact.items())


def _field(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not an OData property name: {name!r}")
    return name


def eq(name: str, value: Scalar) -> Filter:
    exact: dict[str, Scalar] = {name: value} if isinstance(value, str) and "*" in value else {}
    return Filter(f"{_field(name)} eq {literal(value)}", exact)


def key_segment(keys: Mapping[str, Scalar]) -> str:
    """`(dataAreaId='usmf',ProductionOrderNumber='P0''01')`, percent-encoded for a URL path."""
    inner = ",".join(f"{_field(k)}={literal(v)}" for k, v in keys.items())
    return "(" + quote(inner, safe="=,'") + ")"
