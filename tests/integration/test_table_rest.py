"""The bridge's Table client (shared/store/table_rest.py) held to azure-data-tables, against Azurite:
what one writes the other reads with the same values and types, the same refusals (exception type,
status, error code, a transaction's failing index), queries page through continuations, and Azurite
checks the Shared Key signature (a wrong key is refused)."""

from __future__ import annotations

import math
import socket
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import ClientAuthenticationError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.data.tables import EdmType, EntityProperty, TableServiceClient, TableTransactionError, UpdateMode
from azure.data.tables._serialize import _add_entity_properties, _parameter_filter_substitution
from hypothesis import given
from hypothesis import strategies as st

from devtools.azurite import ACCOUNT, ACCOUNT_KEY
from shared.errors import EntityTooLarge
from shared.store.table_rest import Table, TableService, entity_json, filter_with
from shared.store.tables import connect, table

pytestmark = pytest.mark.integration

ODD_KEYS = ["plain", "it's", "pé ünï 😀", "a%20b", "two  spaces, a comma", "x" * 300]


def _pair(azurite: Any, name: str) -> tuple[Table, Any]:
    ours = table(connect(azurite.connection_string), name)
    sdk = TableServiceClient.from_connection_string(azurite.connection_string).get_table_client(name)
    return ours, sdk


def _typed_entity(pk: str, rk: str) -> dict[str, Any]:
    return {
        "PartitionKey": pk,
        "RowKey": rk,
        "Text": "line\r\nbreak — ünïcode 😀 \x00\x1f '' \"quoted\"",
        "Empty": "",
        "Small": -(2**31),
        "Big": EntityProperty(2**62, EdmType.INT64),
        "Flag": True,
        "Off": False,
        "Ratio": 1.25,
        "NotANumber": math.nan,
        "Infinite": -math.inf,
        "When": datetime(2026, 11, 24, 1, 2, 3, 456789, tzinfo=UTC),
        "Blob": b"\r\n--x\x00\xff" * 40,
        "Id": uuid.UUID("c9da6455-213d-42c9-9a79-3e9149a57833"),
        "Typed32": EntityProperty(7, EdmType.INT32),
        "Nothing": None,
    }


def _comparable(entity: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in dict(entity).items():
        if isinstance(value, float) and math.isnan(value):
            value = "nan"
        elif isinstance(value, EntityProperty):
            value = (value.value, str(value.edm_type.value if hasattr(value.edm_type, "value") else value.edm_type))
        elif isinstance(value, datetime):  # the SDK's is its datetime subclass
            value = datetime.fromisoformat(value.astimezone(UTC).isoformat())
        out[name] = (type(value).__name__ if not isinstance(value, (str, bool)) else "", value)
    return out


def test_what_one_writes_the_other_reads_alike(azurite, table_prefix):
    ours, sdk = _pair(azurite, table_prefix + "Both")
    for n, key in enumerate(ODD_KEYS):
        ours.create_entity(_typed_entity(key, f"ours{n}"))
        sdk.create_entity(_typed_entity(key, f"sdk{n}"))
        for rk in (f"ours{n}", f"sdk{n}"):
            read_by_ours, read_by_sdk = ours.get_entity(key, rk), sdk.get_entity(key, rk)
            assert _comparable(read_by_ours) == _comparable(read_by_sdk)
            assert read_by_ours.metadata["etag"] == read_by_sdk.metadata["etag"]
            assert read_by_ours.metadata["timestamp"] == read_by_sdk.metadata["timestamp"]
        written_by_ours, written_by_sdk = (_comparable(ours.get_entity(key, rk)) for rk in (f"ours{n}", f"sdk{n}"))
        assert written_by_ours.pop("RowKey") != written_by_sdk.pop("RowKey")
        assert written_by_ours == written_by_sdk


def test_the_json_says_what_the_sdk_s_does_without_its_string_annotations():
    entity = _typed_entity("p", "r")
    theirs = {k: v for k, v in _add_entity_properties(entity).items() if not (k.endswith("@odata.type") and v == "Edm.String")}
    assert entity_json(entity) == theirs
    with pytest.raises(TypeError):
        entity_json({"PartitionKey": "p", "RowKey": "r", "TooBig": 2**31})  # as the SDK: an Int64 says so
    with pytest.raises(TypeError):
        _add_entity_properties({"PartitionKey": "p", "RowKey": "r", "TooBig": 2**31})


@pytest.mark.parametrize(
    "parameters",
    [
        {"pk": "it's", "low": "a|", "n": 5, "big": 2**40, "flag": True, "when": datetime(2026, 1, 2, tzinfo=UTC)},
        {"pk": "", "low": "é", "n": -1, "big": -(2**40), "flag": False, "when": datetime(1999, 12, 31, 23, 59, tzinfo=UTC)},
    ],
)
def test_filter_parameters_are_put_in_as_the_sdk_does(parameters):
    text = "PartitionKey eq @pk and RowKey ge @low and N lt @n and B eq @big and F eq @flag and T le @when"
    assert filter_with(text, parameters) == _parameter_filter_substitution(parameters, text)


def test_refusals_are_the_sdk_s_exceptions(azurite, table_prefix):
    ours, sdk = _pair(azurite, table_prefix + "Refused")
    pk = uuid.uuid4().hex
    for client in (ours, sdk):
        client.upsert_entity({"PartitionKey": pk, "RowKey": "x", "N": 1})
    stale = ours.get_entity(pk, "x").metadata["etag"]
    ours.update_entity({"PartitionKey": pk, "RowKey": "x", "N": 2})
    cases = [
        (ResourceNotFoundError, lambda c: c.get_entity(pk, "missing")),
        (ResourceExistsError, lambda c: c.create_entity({"PartitionKey": pk, "RowKey": "x"})),
        (
            ResourceModifiedError,
            lambda c: c.update_entity(
                {"PartitionKey": pk, "RowKey": "x", "N": 3},
                mode=UpdateMode.MERGE,
                etag=stale,
                match_condition=MatchConditions.IfNotModified,
            ),
        ),
        (ResourceNotFoundError, lambda c: c.update_entity({"PartitionKey": pk, "RowKey": "gone", "N": 3})),
    ]
    for kind, call in cases:
        caught = []
        for client in (ours, sdk):
            with pytest.raises(kind) as error:
                call(client)
            caught.append(error.value)
        mine, theirs = caught
        assert mine.status_code == theirs.status_code
        assert mine.error_code  # type: ignore[attr-defined]  # the SDK sets it on some of these only
    assert ours.get_entity(pk, "x")["N"] == 2


def test_a_transaction_answers_as_the_sdk_s_and_is_atomic(azurite, table_prefix):
    ours, sdk = _pair(azurite, table_prefix + "Tx")

    def operations(pk: str) -> list[Any]:
        return [
            ("create", {"PartitionKey": pk, "RowKey": "a", "N": 1}),
            ("upsert", {"PartitionKey": pk, "RowKey": "b", "N": 2}, {"mode": UpdateMode.REPLACE}),
            ("upsert", {"PartitionKey": pk, "RowKey": "c", "N": 3}, {"mode": UpdateMode.MERGE}),
        ]

    mine, reference = ours.submit_transaction(operations("p")), sdk.submit_transaction(operations("q"))
    assert [sorted(r) for r in mine] == [sorted(r) for r in reference] == [["etag"]] * 3
    stored = {e["RowKey"]: e.metadata["etag"] for e in ours.query_entities("PartitionKey eq 'p'")}
    assert [r["etag"] for r in mine] == [stored["a"], stored["b"], stored["c"]]

    # A guarded update with the ETag the transaction answered succeeds; a delete in a transaction too.
    guard = {"mode": UpdateMode.MERGE, "etag": mine[0]["etag"], "match_condition": MatchConditions.IfNotModified}
    updated = ours.submit_transaction(
        [("update", {"PartitionKey": "p", "RowKey": "a", "N": 10}, guard), ("delete", {"PartitionKey": "p", "RowKey": "c"})]
    )
    assert updated[0]["etag"] != mine[0]["etag"] and ours.get_entity("p", "a")["N"] == 10
    assert {e["RowKey"] for e in sdk.query_entities("PartitionKey eq 'p'")} == {"a", "b"}
    assert ours.submit_transaction([]) == []


@pytest.mark.parametrize("case", ["an entity that exists", "a stale etag", "a missing entity", "a delete of nothing"])
def test_a_failing_transaction_fails_as_the_sdk_s_does_and_writes_nothing(azurite, table_prefix, case):
    ours, sdk = _pair(azurite, table_prefix + "Fail")
    errors = []
    for client in (ours, sdk):
        pk = uuid.uuid4().hex
        first = client.create_entity({"PartitionKey": pk, "RowKey": "x", "N": 1})
        client.update_entity({"PartitionKey": pk, "RowKey": "x", "N": 2})  # the first ETag is now stale
        ops: list[Any] = [("create", {"PartitionKey": pk, "RowKey": "new", "N": 0})]
        if case == "an entity that exists":
            ops.append(("create", {"PartitionKey": pk, "RowKey": "x", "N": 3}))
        elif case == "a stale etag":
            ops.append(
                (
                    "update",
                    {"PartitionKey": pk, "RowKey": "x", "N": 3},
                    {"etag": first["etag"], "match_condition": MatchConditions.IfNotModified},
                )
            )
        elif case == "a missing entity":
            ops.append(("update", {"PartitionKey": pk, "RowKey": "gone", "N": 3}))
        else:
            ops.append(("delete", {"PartitionKey": pk, "RowKey": "gone"}))
        with pytest.raises(TableTransactionError) as caught:
            client.submit_transaction(ops)
        assert [e["RowKey"] for e in client.query_entities(f"PartitionKey eq '{pk}'")] == ["x"]  # nothing of it
        errors.append(caught.value)
    mine, reference = errors
    assert mine.status_code == reference.status_code and mine.status_code in (404, 409, 412)
    assert cast(Any, mine).error_code == cast(Any, reference).error_code and cast(Any, mine).error_code
    assert mine.index == reference.index == 1
    assert str(mine).splitlines()[0] == str(reference).splitlines()[0]


def test_a_query_pages_through_the_service_s_continuations(azurite, table_prefix):
    ours, sdk = _pair(azurite, table_prefix + "Pages")
    pk = uuid.uuid4().hex
    ours.submit_transaction([("create", {"PartitionKey": pk, "RowKey": f"{n:03}", "N": n}) for n in range(7)])
    paged = list(
        ours.query_entities("PartitionKey eq @pk and N ge @n", parameters={"pk": pk, "n": 2}, select=["N"], results_per_page=2)
    )
    assert [e["N"] for e in paged] == [2, 3, 4, 5, 6] and all(set(e) == {"N"} and e.metadata["etag"] for e in paged)
    assert sorted(e["RowKey"] for e in ours.list_entities(results_per_page=3) if e["PartitionKey"] == pk) == [
        f"{n:03}" for n in range(7)
    ]
    assert [dict(e) for e in ours.query_entities(f"PartitionKey eq '{pk}'")] == [
        dict(e) for e in sdk.query_entities(f"PartitionKey eq '{pk}'")
    ]


def test_azurite_checks_the_signature(azurite, table_prefix):
    wrong = azurite.connection_string.replace(ACCOUNT_KEY, "A" * 86 + "==")
    with pytest.raises(ClientAuthenticationError) as caught:
        TableService.from_connection_string(wrong).get_table_client(table_prefix + "Nope").get_entity("p", "r")
    assert caught.value.status_code == 403
    assert ACCOUNT in azurite.connection_string


def test_a_connection_the_server_closed_is_opened_again(azurite, table_prefix):
    ours, _ = _pair(azurite, table_prefix + "Idle")
    ours.upsert_entity({"PartitionKey": "p", "RowKey": "r", "N": 1})
    connection = ours.endpoint._local.connection
    assert connection is not None and connection.sock is not None
    connection.sock.shutdown(socket.SHUT_RDWR)  # as the server's idle timeout does (Azurite's is 5 s)
    assert ours.get_entity("p", "r")["N"] == 1
    assert ours.endpoint._local.connection is not connection


def test_limits_are_checked_before_the_write_leaves(azurite, table_prefix):
    ours, sdk = _pair(azurite, table_prefix + "Limits")
    with pytest.raises(EntityTooLarge, match="64 KiB"):
        ours.create_entity({"PartitionKey": "p", "RowKey": "r", "Text": "x" * 40000})
    escaped = {f"T{n}": "é" * 30000 for n in range(6)}  # 360 KB as Azure counts, 1.08 MB of JSON as Azurite does
    with pytest.raises(EntityTooLarge, match="JSON"):
        ours.submit_transaction([("upsert", {"PartitionKey": "p", "RowKey": "s", **escaped})])
    with pytest.raises(ResourceNotFoundError):
        sdk.get_entity("p", "r")


def test_connection_strings():
    dev = TableService.from_connection_string("UseDevelopmentStorage=true")
    assert dev.endpoint.url == f"http://127.0.0.1:10002/{ACCOUNT}"
    cloud = TableService.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};EndpointSuffix=core.windows.net"
    )
    assert cloud.endpoint.url == "https://acct.table.core.windows.net" and cloud.endpoint.base_path == ""
    sas = TableService.from_connection_string(
        "TableEndpoint=https://acct.table.core.windows.net/;SharedAccessSignature=sv=2019&sig=x"
    )
    assert sas.endpoint.sas == "sv=2019&sig=x"
    for bad, says in [
        ("AccountName=acct", "neither AccountKey nor SharedAccessSignature"),
        ("AccountKey=abc", "names neither"),
        ("nonsense", "Name=value"),
        ("AccountName=a;AccountKey=not base64!", "not base64"),
    ]:
        with pytest.raises(ValueError, match=says):
            TableService.from_connection_string(bad)


def test_a_token_is_fetched_once_and_renewed_before_it_expires():
    from shared.store import table_rest

    class Credential:
        def __init__(self) -> None:
            self.calls: list[tuple[str, ...]] = []

        def get_token(self, *scopes: str) -> Any:
            self.calls.append(scopes)
            return type("Token", (), {"token": f"t{len(self.calls)}", "expires_on": now[0] + 3600})()

    now = [1_000_000.0]
    credential = Credential()
    bearer = table_rest._Bearer(credential, clock=lambda: now[0])
    headers: dict[str, str] = {}
    bearer.sign("GET", "/t", headers)
    bearer.sign("GET", "/t", headers)
    assert headers["Authorization"] == "Bearer t1" and credential.calls == [(table_rest.STORAGE_SCOPE,)]
    now[0] += 3600 - 299  # within five minutes of expiry
    bearer.sign("GET", "/t", headers)
    assert headers["Authorization"] == "Bearer t2"


def test_each_call_is_one_dependency_span_without_the_query(azurite, table_prefix, monkeypatch):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from shared.store import table_rest

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(table_rest, "_TRACER", provider.get_tracer("test"))
    ours, _ = _pair(azurite, table_prefix + "Spans")
    ours.upsert_entity({"PartitionKey": "p", "RowKey": "r"})
    with pytest.raises(ResourceNotFoundError):
        ours.get_entity("p", "missing")
    list(ours.query_entities("PartitionKey eq 'p'"))
    spans = [(s.kind, dict(s.attributes or {})) for s in exported.get_finished_spans()]
    assert [(kind, a["http.request.method"], a["http.response.status_code"]) for kind, a in spans] == [
        (SpanKind.CLIENT, "POST", 204),  # the table created
        (SpanKind.CLIENT, "PATCH", 204),
        (SpanKind.CLIENT, "GET", 404),
        (SpanKind.CLIENT, "GET", 200),
    ]
    assert all("?" not in str(a["url.full"]) and str(a["url.full"]).startswith("http://127.0.0.1") for _, a in spans)


@given(st.text())
def test_a_key_in_a_url_is_quoted_as_urllib_quotes_it(key):
    from urllib.parse import quote

    from shared.store.table_rest import _key

    assert _key(key) == quote(key.replace("'", "''"), safe="")


def test_the_splitter_takes_the_multipart_shapes_rfc_2046_allows():
    from shared.store.table_rest import _operation_answers, multipart_parts

    body = (
        b'preamble\r\n--b1\r\nContent-Type: multipart/mixed; boundary="c 1"\r\n\r\n'
        b"--c 1\nContent-Type: application/http\nContent-Transfer-Encoding: binary\n\nHTTP/1.1 204 No Content\n\n\n"
        b"--c 1  \r\n\r\nno headers\r\n--c 1--\r\n--b1--\r\nepilogue"
    )
    (outer,) = multipart_parts("multipart/mixed; boundary=b1", body)
    assert outer[0] == 'multipart/mixed; boundary="c 1"'
    assert multipart_parts(outer[0], outer[1]) == [
        ("application/http", b"HTTP/1.1 204 No Content\n\n"),
        ("", b"no headers"),
    ]
    inside = b"--b1\r\nContent-Type: t\r\n\r\nx--b1 y\r\n--b1x\r\n--b1\t\r\n\r\nz\n--b1--"
    assert multipart_parts('multipart/mixed; boundary="b1"', inside) == [("t", b"x--b1 y\r\n--b1x"), ("", b"z")]
    for bad in (b"--b1\r\nContent-Type: x\r\n\r\nno end", b"--b1\r\nContent-Transfer-Encoding: base64\r\n\r\nAA==\r\n--b1--"):
        with pytest.raises(ValueError):
            multipart_parts("multipart/mixed; boundary=b1", bad)
    # An operation's answer: its status line, its headers, its body.
    answer = (
        b"--r\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\nContent-Type: application/http\r\n\r\n"
        b'HTTP/1.1 409 Conflict\r\nContent-ID: 2\r\nETag: W/"x"\r\n\r\n{"odata.error":{}}\r\n--c--\r\n--r--\r\n'
    )
    assert _operation_answers("multipart/mixed; boundary=r", answer) == [
        (409, {"content-id": "2", "etag": 'W/"x"'}, b'{"odata.error":{}}')
    ]
    with pytest.raises(ValueError):
        _operation_answers("multipart/mixed; boundary=r", answer.replace(b"HTTP/1.1 409", b"garbage"))


def test_a_proxy_is_used_for_a_remote_endpoint_and_never_for_loopback(monkeypatch):
    from shared.store.table_rest import Endpoint, _Anonymous

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    remote = Endpoint("https://acct.table.core.windows.net", _Anonymous())
    assert remote._proxy == ("proxy.example", 3128)
    connection = remote._connect()
    assert (connection.host, connection.port) == (
        "proxy.example",
        3128,
    ) and cast(Any, connection)._tunnel_host == "acct.table.core.windows.net"
    assert Endpoint("http://127.0.0.1:10002/devstoreaccount1", _Anonymous())._proxy is None
    monkeypatch.setenv("NO_PROXY", "table.core.windows.net")
    assert Endpoint("https://acct.table.core.windows.net", _Anonymous())._proxy is None
