"""A small OData v4 engine over in-memory rows: `$filter` (eq/ne/gt/ge/lt/le, and/or/not,
parentheses, strings with doubled quotes, numbers, booleans, null, F&O enum literals), `$select`,
`$orderby`, `$top`, `$skip`, `$count`, and server-driven paging with `@odata.nextLink`.

Like F&O, `*` inside an `eq` string literal is a wildcard, string comparison ignores case, and
`has`/`in` and functions are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

Row = Mapping[str, Any]


class ODataError(Exception):
    operation_index = -1  # which operation of a changeset failed

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<enum>[A-Za-z_][\w.]*'(?:[^']|'')*')
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<lparen>\()
    | (?P<rparen>\))
    | (?P<comma>,)
    | (?P<equals>=)
    | (?P<word>[A-Za-z_][\w.]*)
    )""",
    re.VERBOSE,
)
_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise ODataError(400, f"Syntax error at position {position} in '{text}'.")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
    return tokens


Predicate = Callable[[Row], bool]


def _string_value(token: str) -> str:
    return token[1:-1].replace("''", "'")


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(p) for p in pattern.split("*")) + "$", re.IGNORECASE | re.DOTALL)


def _compare(op: str, left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        if op in ("eq", "ne") and "*" in right:
            matched = bool(_wildcard(right).match(left))
            return matched if op == "eq" else not matched
        left, right = left.casefold(), right.casefold()
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool({"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op])
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: Sequence[Token], fields: set[str]) -> None:
        self.tokens = list(tokens)
        self.position = 0
        self.fields = fields

    def peek(self) -> Token | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise ODataError(400, "Unexpected end of $filter.")
        self.position += 1
        return token

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        if self.peek() is not None:
            raise ODataError(400, f"Syntax error near '{self.peek().text}' in $filter.")  # type: ignore[union-attr]
        return predicate

    def or_expr(self) -> Predicate:
        left = self.and_expr()
        while (t := self.peek()) is not None and t.kind == "word" and t.text == "or":
            self.take()
            right = self.and_expr()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def and_expr(self) -> Predicate:
        left = self.unary()
        while (t := self.peek()) is not None and t.kind == "word" and t.text == "and":
            self.take()
            right = self.unary()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def unary(self) -> Predicate:
        t = self.peek()
        if t is not None and t.kind == "word" and t.text == "not":
            self.take()
            inner = self.unary()
            return lambda row: not inner(row)
        if t is not None and t.kind == "lparen":
            self.take()
            inner = self.or_expr()
            if self.take().kind != "rparen":
                raise ODataError(400, "Missing ')' in $filter.")
            return inner
        return self.comparison()

    def operand(self) -> Callable[[Row], Any]:
        t = self.take()
        if t.kind == "string":
            value: Any = _string_value(t.text)
            return lambda row: value
        if t.kind == "enum":
            symbol = _string_value(t.text[t.text.index("'") :])
            return lambda row: symbol
        if t.kind == "number":
            number = float(t.text) if any(c in t.text for c in ".eE") else int(t.text)
            return lambda row: number
        if t.kind == "word":
            if t.text in ("true", "false"):
                flag = t.text == "true"
                return lambda row: flag
            if t.text == "null":
                return lambda row: None
            nxt = self.peek()
            if nxt is not None and nxt.kind == "lparen":
                raise ODataError(400, f"The function '{t.text}' is not supported.")
            if t.text not in self.fields:
                raise ODataError(400, f"Could not find a property named '{t.text}' on type 'Microsoft.Dynamics.DataEntities'.")
            name = t.text
            return lambda row: row.get(name)
        raise ODataError(400, f"Syntax error near '{t.text}' in $filter.")

    def comparison(self) -> Predicate:
        left = self.operand()
        op = self.take()
        if op.kind != "word" or op.text not in _COMPARISONS:
            if op.text in ("has", "in"):
                raise ODataError(400, "The operators 'has' and 'in' are not supported.")
            raise ODataError(400, f"Unknown operator '{op.text}' in $filter.")
        right = self.operand()
        return lambda row: _compare(op.text, left(row), right(row))


def parse_filter(text: str, fields: set[str]) -> Predicate:
    return _Parser(tokenize(text), fields).parse()


def parse_key(segment: str, keys: Sequence[str]) -> dict[str, Any]:
    """`dataAreaId='usmf',ProductionOrderNumber='P1'` → values; every key field must be given."""
    tokens = tokenize(unquote(segment))
    values: dict[str, Any] = {}
    for start in range(0, len(tokens), 4):
        group = tokens[start : start + 4]
        kinds = [t.kind for t in group]
        if kinds[:2] != ["word", "equals"] or len(group) < 3 or (len(group) == 4 and kinds[3] != "comma"):
            raise ODataError(400, "Malformed key segment.")
        name, value = group[0].text, group[2]
        if value.kind == "string":
            values[name] = _string_value(value.text)
        elif value.kind == "number":
            values[name] = float(value.text) if "." in value.text else int(value.text)
        else:
            raise ODataError(400, "Malformed key segment.")
    if set(values) != set(keys):
        raise ODataError(400, f"All fields of the entity key must be provided: {', '.join(keys)}.")
    return values


def query(
    rows: Sequence[Row],
    params: Mapping[str, str],
    *,
    fields: set[str],
    page_size: int,
    self_url: str,
) -> dict[str, Any]:
    """Run the query options over `rows` and build the JSON answer with paging."""
    for name in params:
        if name.startswith("$") and name not in {"$filter", "$select", "$top", "$skip", "$count", "$orderby", "$expand"}:
            raise ODataError(400, f"The query parameter '{name}' is not supported.")
    if "$expand" in params:
        raise ODataError(400, "$expand is not supported by this emulator.")
    selected = list(rows)
    if "$filter" in params:
        predicate = parse_filter(params["$filter"], fields)
        selected = [row for row in selected if predicate(row)]
    count = len(selected)
    if "$orderby" in params:
        for clause in reversed([c.strip() for c in params["$orderby"].split(",")]):
            name, _, direction = clause.partition(" ")
            if name not in fields:
                raise ODataError(400, f"Could not find a property named '{name}'.")
            selected.sort(key=lambda row, n=name: (row.get(n) is None, row.get(n)), reverse=direction.strip() == "desc")  # type: ignore[misc]
    try:
        skip = int(params.get("$skip", "0"))
        top = int(params["$top"]) if "$top" in params else None
    except ValueError:
        raise ODataError(400, "$skip and $top must be whole numbers.") from None
    window = selected[skip:]
    if top is not None:
        window = window[:top]
    page = window[:page_size]
    answer: dict[str, Any] = {"@odata.context": f"{self_url.split('?')[0]}/$metadata"}
    if params.get("$count") == "true":
        answer["@odata.count"] = count
    if "$select" in params:
        names = [n.strip() for n in params["$select"].split(",")]
        unknown = [n for n in names if n not in fields]
        if unknown:
            raise ODataError(400, f"Could not find a property named '{unknown[0]}'.")
        page = [{n: row.get(n) for n in names} for row in page]
    answer["value"] = [dict(row) for row in page]
    if len(window) > page_size:
        following = dict(params)
        following["$skip"] = str(skip + page_size)
        if top is not None:
            following["$top"] = str(top - page_size)
        answer["@odata.nextLink"] = (
            self_url.split("?")[0] + "?" + "&".join(f"{quote(k, safe='$-')}={quote(v, safe='')}" for k, v in following.items())
        )
    return answer
