"""The bridge's header parser against http.client's own: the same message for the same bytes."""

from __future__ import annotations

import email.parser
import http.client
import io
from collections.abc import Callable
from typing import Any

import pytest
import requests

from shared.fo import http as bridge_http

PLAIN = [
    # A Table transaction's answer: multipart, the case the stdlib parser is slowest on.
    b"Server: Azurite-Table/3.34.0\r\ncontent-type: multipart/mixed; boundary=batchresponse_8c0b6a3a\r\n"
    b"x-ms-version: 2019-02-02\r\nDate: Mon, 23 Nov 2026 12:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n",
    # One of its parts.
    b"X-Content-Type-Options: nosniff\r\nPreference-Applied: return-no-content\r\n"
    b"ETag: W/\"datetime'2026-11-23T12%3A00%3A00.123Z'\"\r\n\r\n",
    b"Content-Type: application/json; odata=minimalmetadata\r\nContent-Length: 12\r\n\r\n",
    b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nEmpty:\r\nSpaces:   padded   \r\nTab:\tx\r\n\r\n",
    b"Bare-LF: yes\nOther: \xe9t\xe9\n\n",
    b"Only-Value-Colons: a:b:c\r\n\r\n",
    b"\r\n",
    b"",  # the stream ended before any header
    b"No-Blank-Line: end of stream\r\n",
]

ODD = [
    b"Folded: first\r\n  second\r\nNext: 1\r\n\r\n",  # a continuation line
    b" Leading: continuation\r\nA: 1\r\n\r\n",
    b"From someone\r\nA: 1\r\n\r\n",
    b"Name With Space: 1\r\nB: 2\r\n\r\n",
    b": no name\r\nA: 1\r\n\r\n",
    b"no colon at all\r\nA: 1\r\n\r\n",
    b"Lone-CR: a\rb\r\nA: 1\r\n\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
]


def _parsed(parser: object, raw: bytes) -> http.client.HTTPMessage:
    message = parser(io.BytesIO(raw))  # type: ignore[operator]
    assert isinstance(message, http.client.HTTPMessage)
    return message


@pytest.mark.parametrize("raw", PLAIN + ODD)
def test_the_same_headers_as_the_stdlib(raw: bytes) -> None:
    ours, theirs = _parsed(bridge_http.parse_headers, raw), _parsed(bridge_http._stdlib_parse_headers, raw)
    assert ours.items() == theirs.items()
    assert ours.get_all("Set-Cookie") == theirs.get_all("Set-Cookie")
    assert ours.get_content_type() == theirs.get_content_type()
    if not theirs.is_multipart():
        assert ours.get_payload() == theirs.get_payload()


@pytest.mark.parametrize("raw", ODD)
def test_odd_shapes_go_to_the_stdlib_parser(raw: bytes) -> None:
    ours = _parsed(bridge_http.parse_headers, raw)
    theirs = _parsed(bridge_http._stdlib_parse_headers, raw)
    assert [type(d) for d in ours.defects] == [type(d) for d in theirs.defects]
    assert ours.get_unixfrom() == theirs.get_unixfrom()


@pytest.mark.parametrize("raw", PLAIN)
def test_a_plain_answer_does_not_use_the_feed_parser(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _parsed(bridge_http._stdlib_parse_headers, raw).items()

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("the feed parser was used")

    monkeypatch.setattr(email.parser.Parser, "parsestr", refuse)
    assert _parsed(bridge_http.parse_headers, raw).items() == expected


def test_http_client_reads_answers_with_it_once_a_session_exists() -> None:
    bridge_http.PinnedTrustSession()
    assert http.client.parse_headers is bridge_http.parse_headers
    answer = http.client.HTTPResponse(_Socket(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nA: 1\r\n\r\nok"))  # type: ignore[arg-type]
    answer.begin()
    assert (answer.status, answer.getheader("A"), answer.read()) == (200, "1", b"ok")


class _Socket:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def makefile(self, *_: object, **__: object) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self._data))


# --- DirectSession: the same request as requests' own Session.request -----------------------------

CALLS: list[dict[str, Any]] = [
    {"method": "post", "url": "https://fo.example/api/x", "json": {"a": 1, "é": "ü"}, "headers": {"Authorization": "Bearer t"}},
    {
        "method": "POST",
        "url": "https://login.example/t/oauth2/v2.0/token",
        "data": {"grant_type": "client_credentials", "scope": "s x"},
    },
    {"method": "GET", "url": "https://fo.example/data/E?$filter=Name eq 'a b'&$top=1", "params": {"cross-company": "true"}},
    {"method": "PATCH", "url": b"https://t.example/Ledger(PartitionKey='USMF',RowKey='m%2F1')", "data": b'{"State":"x"}'},
    {
        "method": "POST",
        "url": "https://t.example/$batch",
        "data": b"--b\r\n\r\n--b--\r\n",
        "headers": {"Accept-Encoding": None, "X": "1"},
    },
    {
        "method": "GET",
        "url": "http://127.0.0.1:10002/devstoreaccount1/T()",
        "headers": {"User-Agent": "azsdk"},
        "timeout": (5, 10),
    },
    {"method": "PUT", "url": "https://t.example/x", "files": {"f": ("name.txt", b"content")}},
]


def _sent(session: requests.Session, call: dict[str, Any], through: Callable[..., Any]) -> tuple[Any, ...]:
    captured: dict[str, Any] = {}

    def send(request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        captured.update(kwargs, request=request)
        return requests.Response()

    session.send = send  # type: ignore[method-assign]
    through(session, **call)
    request = captured.pop("request")
    body, headers = request.body, dict(request.headers)
    if call.get("files"):  # a multipart form's boundary is random: compare without it
        boundary = headers.pop("Content-Type").split("boundary=")[1]
        body = body.replace(boundary.encode(), b"")
    return request.method, request.url, headers, body, {k: v for k, v in captured.items() if v != {}}


@pytest.mark.parametrize("call", CALLS)
def test_a_direct_session_sends_what_requests_would(call: dict[str, Any]) -> None:
    direct = bridge_http.DirectSession()
    direct.trust_env = False
    plain = requests.Session()
    plain.trust_env = False
    assert _sent(direct, call, bridge_http.DirectSession.request) == _sent(plain, call, requests.Session.request)


def test_a_direct_session_with_a_cookie_or_the_environment_takes_requests_own_path() -> None:
    session = bridge_http.DirectSession()
    session.cookies.set("c", "1")
    session.trust_env = False
    assert _sent(session, CALLS[0], bridge_http.DirectSession.request)[2]["Cookie"] == "c=1"
    session = bridge_http.DirectSession()
    session.trust_env = True
    session.auth = ("u", "p")
    assert _sent(session, CALLS[0], bridge_http.DirectSession.request)[2]["Authorization"].startswith("Basic ")
