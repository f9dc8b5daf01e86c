"""The Table transport writes each request in one piece: the same bytes http.client's `request` writes."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

import pytest

from shared.store.table_rest import Endpoint, _Anonymous


class Capture:
    """A socket that keeps what http.client sends on it."""

    def __init__(self) -> None:
        self.sent = b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def settimeout(self, _timeout: Any) -> None:
        pass


def stdlib(url: str, method: str, target: str, headers: dict[str, str], body: bytes | None) -> bytes:
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port)
    capture = Capture()
    connection.sock = capture
    connection.request(method, target, body=body, headers=headers)
    return capture.sent


CASES = [
    ("http://127.0.0.1:10002/devstoreaccount1", "GET", "/devstoreaccount1/t(PartitionKey='a',RowKey='b')", None),
    ("http://127.0.0.1:10002/devstoreaccount1", "POST", "/devstoreaccount1/$batch", b"--batch_1\r\n...\r\n--batch_1--\r\n"),
    ("http://127.0.0.1:10002/devstoreaccount1", "PATCH", "/devstoreaccount1/t(PartitionKey='a',RowKey='b')", b'{"V":1}'),
    ("http://127.0.0.1:10002/devstoreaccount1", "DELETE", "/devstoreaccount1/t(PartitionKey='a',RowKey='b')", None),
    ("https://account.table.core.windows.net", "POST", "/t", None),
    ("https://account.table.core.windows.net", "GET", "/t()?%24filter=x", None),
    ("http://[::1]:10002/devstoreaccount1", "GET", "/devstoreaccount1/Tables", None),
]


@pytest.mark.parametrize(("url", "method", "target", "body"), CASES)
def test_a_request_is_written_as_http_client_writes_it(url: str, method: str, target: str, body: bytes | None) -> None:
    headers = {"x-ms-date": "Mon, 07 Dec 2026 01:00:00 GMT", "x-ms-version": "2019-02-02", "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    written = Endpoint(url, _Anonymous())._request(method, target, dict(headers), body)
    assert written == stdlib(url, method, target, dict(headers), body)


def test_a_header_value_with_a_line_break_is_refused_as_http_client_refuses_it() -> None:
    endpoint = Endpoint("http://127.0.0.1:10002/devstoreaccount1", _Anonymous())
    with pytest.raises(ValueError, match="Invalid header value"):
        endpoint._request("GET", "/t", {"x-ms-client-request-id": "a\r\nInjected: yes"}, None)
    with pytest.raises(ValueError, match="Invalid header value"):
        stdlib("http://127.0.0.1:10002/devstoreaccount1", "GET", "/t", {"x-ms-client-request-id": "a\r\nInjected: yes"}, None)
