"""Table transactions without azure-core's thread pools and email package (shared/store/tables.py):
the same answers as the SDK's own path against Azurite (results, ETags, a failing operation's status,
code and index), the same request bytes, and a loud failure if azure-core changes what it relies on."""

from __future__ import annotations

import concurrent.futures
import copy
import inspect
import re
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any, cast

import pytest
from azure.core import MatchConditions
from azure.core.pipeline import Pipeline
from azure.core.utils import _pipeline_transport_rest_shared
from azure.data.tables import TableClient, TableServiceClient, TableTransactionError, UpdateMode
from azure.data.tables._base_client import TablesBaseClient
from azure.data.tables._generated import AzureTable
from azure.data.tables._generated import _client as generated_client

from shared.store.tables import SequentialMultipartPipeline, TableTransport, connect, multipart_parts, table

pytestmark = pytest.mark.integration

REQUIREMENTS = Path(__file__).resolve().parents[2] / "requirements.txt"


class PoolCounter:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.created = 0
        original = concurrent.futures.ThreadPoolExecutor.__init__

        def counting(executor: Any, *args: Any, **kwargs: Any) -> None:
            self.created += 1
            original(executor, *args, **kwargs)

        monkeypatch.setattr(concurrent.futures.ThreadPoolExecutor, "__init__", counting)


def test_azure_core_is_the_pinned_version_and_still_has_the_replaced_internals():
    pinned = re.search(r"^azure-core==(\S+)$", REQUIREMENTS.read_text(), re.MULTILINE)
    assert pinned, "requirements.txt must pin azure-core: shared/store/tables.py replaces two of its internals"
    assert version("azure-core") == pinned.group(1), "azure-core changed: re-check SequentialMultipartPipeline"
    # The two places that create the pools, as SequentialMultipartPipeline and _SequentialPartsResponse
    # replace them: when either changes, read them again before moving the pin.
    prepare = inspect.getsource(Pipeline._prepare_multipart_mixed_request)
    assert "ThreadPoolExecutor" in prepare and "multipart_mixed_info[3]" in prepare
    assert "self._prepare_multipart_mixed_request(request)" in inspect.getsource(Pipeline._prepare_multipart)
    parts = inspect.getsource(_pipeline_transport_rest_shared._parts_helper)
    assert "ThreadPoolExecutor" in parts and "multipart_mixed_info[1]" in parts and "_get_raw_parts()" in parts
    # The generated client's send_request, which _send_transaction replaces for _batch_send alone.
    tables_pin = re.search(r"^azure-data-tables==(\S+)$", REQUIREMENTS.read_text(), re.MULTILINE)
    assert tables_pin and version("azure-data-tables") == tables_pin.group(1), "azure-data-tables changed"
    send = inspect.getsource(AzureTable.send_request)
    assert "request_copy = deepcopy(request)" in send
    assert '"url": self._serialize.url("self._config.url", self._config.url, "str", skip_quote=True)' in send
    assert "self._client.format_url(request_copy.url, **path_format_arguments)" in send
    assert "self._client.send_request(request_copy, **kwargs)" in send
    assert "self._client.send_request(request, stream=True, **kwargs)" in inspect.getsource(TablesBaseClient._batch_send)


def _plain(azurite_connection: str, name: str) -> TableClient:
    """The SDK's own path (thread pools included), as the reference."""
    service = TableServiceClient.from_connection_string(azurite_connection)
    service.create_table_if_not_exists(name)
    return service.get_table_client(name)


def _shape(result: dict[str, Any]) -> dict[str, Any]:
    return {key: type(value).__name__ for key, value in result.items()}


def test_a_transaction_runs_in_the_calling_thread_with_the_sdk_s_answers(azurite, table_prefix, monkeypatch):
    ours = table(connect(azurite.connection_string), table_prefix + "Tx")
    plain = _plain(azurite.connection_string, table_prefix + "Ref")
    pipeline: Any = cast(Any, ours)._client._client._pipeline
    assert type(pipeline) is SequentialMultipartPipeline
    wrapper: Any = pipeline._transport  # azure-data-tables' TransportWrapper around the service's transport
    assert isinstance(wrapper._transport, TableTransport)
    pools = PoolCounter(monkeypatch)
    copies: list[Any] = []

    def counting_deepcopy(value: Any) -> Any:
        copies.append(value)
        return copy.deepcopy(value)

    monkeypatch.setattr(generated_client, "deepcopy", counting_deepcopy)

    def operations(pk: str) -> list[Any]:
        return [
            ("create", {"PartitionKey": pk, "RowKey": "a", "N": 1}),
            ("upsert", {"PartitionKey": pk, "RowKey": "b", "N": 2}, {"mode": UpdateMode.REPLACE}),
            ("upsert", {"PartitionKey": pk, "RowKey": "c", "N": 3}, {"mode": UpdateMode.MERGE}),
        ]

    mine = ours.submit_transaction(operations("p"))
    assert pools.created == 0, "a Table transaction created a thread pool: azure-core's internals changed"
    assert copies == [], "a Table transaction deep-copied its request: azure-data-tables' internals changed"
    reference = plain.submit_transaction(operations("p"))
    sdk_pools = pools.created
    assert sdk_pools > 0  # the counter sees the SDK's own pools, so the zero above means something
    assert copies  # and the SDK's own copy, so the empty list above means something too

    assert [_shape(dict(r)) for r in mine] == [_shape(dict(r)) for r in reference]
    stored = {e["RowKey"]: e.metadata["etag"] for e in ours.query_entities("PartitionKey eq 'p'")}
    assert [r["etag"] for r in mine] == [stored["a"], stored["b"], stored["c"]]

    # A guarded update with the ETag the transaction answered succeeds; deleting in a transaction too.
    entity = {"PartitionKey": "p", "RowKey": "a", "N": 10}
    guard = {"mode": UpdateMode.MERGE, "etag": mine[0]["etag"], "match_condition": MatchConditions.IfNotModified}
    updated = ours.submit_transaction([("update", entity, guard), ("delete", {"PartitionKey": "p", "RowKey": "c"})])
    assert updated[0]["etag"] != mine[0]["etag"] and ours.get_entity("p", "a")["N"] == 10
    assert {e["RowKey"] for e in ours.query_entities("PartitionKey eq 'p'")} == {"a", "b"}
    assert pools.created == sdk_pools  # none more for ours


def _failure(client: TableClient, operations: list[Any]) -> TableTransactionError:
    with pytest.raises(TableTransactionError) as caught:
        client.submit_transaction(operations)
    return caught.value


@pytest.mark.parametrize(
    "case",
    ["an entity that exists", "a stale etag", "a missing entity"],
)
def test_a_failing_transaction_fails_as_the_sdk_s_path_does_and_writes_nothing(azurite, table_prefix, case):
    ours = table(connect(azurite.connection_string), table_prefix + "Fail")
    plain = _plain(azurite.connection_string, table_prefix + "FailRef")
    errors = []
    for client in (ours, plain):
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
        else:
            ops.append(("update", {"PartitionKey": pk, "RowKey": "gone", "N": 3}))
        error = _failure(client, ops)
        # Atomic: the operation before the failing one is not written either.
        assert [e["RowKey"] for e in client.query_entities(f"PartitionKey eq '{pk}'")] == ["x"]
        errors.append(error)
    mine, reference = (cast(Any, error) for error in errors)
    assert mine.status_code == reference.status_code and mine.status_code in (404, 409, 412)
    assert mine.error_code == reference.error_code and mine.error_code
    assert str(mine).splitlines()[0] == str(reference).splitlines()[0]  # names the failing operation (index 1)


def _as_seen(parts: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.read(), p.status_code, p.reason, sorted(p.headers.items()), p.request) for p in parts]


def test_the_answer_s_parts_are_those_azure_core_s_email_parser_gives(azurite, table_prefix):
    """Each `$batch` answer Azurite gives (success, and each way one fails) decoded both ways."""
    answers: list[Any] = []

    def keep(pipeline_response: Any) -> None:
        if pipeline_response.http_request.multipart_mixed_info:
            answers.append(pipeline_response.http_response)

    client = table(connect(azurite.connection_string, raw_response_hook=keep), table_prefix + "Parts")
    pk = uuid.uuid4().hex
    done = client.submit_transaction([("create", {"PartitionKey": pk, "RowKey": r, "N": 1}) for r in "abc"])
    for ops in (
        [("upsert", {"PartitionKey": pk, "RowKey": "d"}), ("create", {"PartitionKey": pk, "RowKey": "a"})],
        [
            (
                "update",
                {"PartitionKey": pk, "RowKey": "a"},
                {"etag": "W/\"datetime'2000-01-01T00%3A00%3A00Z'\"", "match_condition": MatchConditions.IfNotModified},
            )
        ],
        [
            ("delete", {"PartitionKey": pk, "RowKey": "b"}),
            (
                "delete",
                {"PartitionKey": pk, "RowKey": "zz"},
                {"etag": done[0]["etag"], "match_condition": MatchConditions.IfNotModified},
            ),
        ],
    ):
        _failure(client, ops)
    assert len(answers) == 4
    seen = []
    for answer in answers:
        assert type(answer).__name__ == "_SequentialPartsResponse"
        ours, theirs = answer._decoded_parts(), answer._get_raw_parts()
        assert _as_seen(ours) == _as_seen(theirs) and ours
        seen += [(part.status_code, b"odata.error" in part.read()) for part in ours]
    # Three created, then each failure's one answer with its error body (409, 412, 404 as Azurite words them).
    assert seen[:3] == [(201, False)] * 3 and len(seen) == 6 and all(status >= 400 and error for status, error in seen[3:])


def test_the_splitter_takes_the_multipart_shapes_rfc_2046_allows():
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


def test_the_request_body_is_byte_for_byte_the_one_azure_core_s_email_generator_writes(azurite, table_prefix):
    sent: list[Any] = []

    def keep(pipeline_request: Any) -> None:
        if pipeline_request.http_request.multipart_mixed_info:
            request = pipeline_request.http_request
            sent.append((request, bytes(request.body), request.headers["Content-Type"]))

    service = TableServiceClient.from_connection_string(
        azurite.connection_string, transport=TableTransport(), raw_request_hook=keep
    )
    client = table(service, table_prefix + "Body")
    pk = "pé " + uuid.uuid4().hex
    odd = "line\r\nbreak\rcr\nlf — ünïcode 😀 --changeset_ --batch_ \x00\x1f"
    client.submit_transaction(
        [
            ("create", {"PartitionKey": pk, "RowKey": "a", "Text": odd, "N": 2**30, "F": 1.5, "B": True}),
            ("upsert", {"PartitionKey": pk, "RowKey": "b", "Blob": b"\r\n--x\x00" * 50}, {"mode": UpdateMode.REPLACE}),
            ("upsert", {"PartitionKey": pk, "RowKey": "c", "Text": "x" * 30000}, {"mode": UpdateMode.MERGE}),
        ]
    )
    _failure(client, [("create", {"PartitionKey": pk, "RowKey": "d"}), ("delete", {"PartitionKey": pk, "RowKey": "none"})])
    assert len(sent) == 2
    for request, ours, content_type in sent:
        request.prepare_multipart_body()  # azure-core's own, on the same (already prepared) sub-requests
        assert (ours, content_type) == (bytes(request.body), request.headers["Content-Type"])
        assert content_type.startswith("multipart/mixed; boundary=batch_")
