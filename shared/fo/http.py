"""The one HTTP session type the bridge uses, for F&O and for Entra alike, and the header parser
every HTTP answer of the process goes through (Table Storage's too)."""

from __future__ import annotations

import email.parser
import http.client
import re
import threading
from typing import Any, BinaryIO
from urllib.request import getproxies

import requests
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.structures import CaseInsensitiveDict
from requests.utils import DEFAULT_CA_BUNDLE_PATH


class DirectSession(requests.Session):
    """requests' Session, its `request` preparing the request without `Session.prepare_request`'s
    merging of session settings the bridge never sets (cookies, auth, params, proxies, hooks).

    That merging (dictionaries rebuilt through `to_key_val_list`, each checked against typing
    protocols, a cookie jar built and merged twice) was about a tenth of an event's CPU, over the
    six HTTP calls of an event. The request is the same: the session's headers under the call's,
    then requests' own `PreparedRequest.prepare`; anything the shortcut does not cover (a proxy,
    the environment, a cookie, auth, hooks) takes requests' own path. tests/unit/test_http_headers.py
    compares the two."""

    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: bool | None = None,
        verify: Any = None,
        cert: Any = None,
        json: Any = None,
    ) -> requests.Response:
        if (
            self.trust_env
            or self.auth
            or self.params
            or self.proxies
            or len(self.cookies)
            or any(self.hooks.values())
            or cookies
            or auth
            or hooks
            or proxies
        ):
            return super().request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                cookies=cookies,
                files=files,
                auth=auth,
                timeout=timeout,
                allow_redirects=allow_redirects,
                proxies=proxies,
                hooks=hooks,
                stream=stream,
                verify=verify,
                cert=cert,
                json=json,
            )
        merged = CaseInsensitiveDict(self.headers)
        if headers:
            merged.update(headers)
        for name in [name for name, value in merged.items() if value is None]:
            del merged[name]
        prepared = PreparedRequest()
        prepared.prepare(
            method=(method.decode() if isinstance(method, bytes) else method).upper(),
            url=url.decode("utf-8") if isinstance(url, bytes) else url,
            headers=merged,
            files=files,
            data=data or {},
            json=json,
            params=params or {},
        )
        return self.send(
            prepared,
            timeout=timeout,
            allow_redirects=allow_redirects,
            proxies={},
            stream=self.stream if stream is None else stream,
            verify=self.verify if verify is None else verify,
            cert=self.cert if cert is None else cert,
        )


class PinnedTrustSession(DirectSession):
    """A pooled session whose certificate trust cannot be changed by the environment.

    `requests` lets REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) replace `verify=True`, on the session and
    per request alike; only a path is left alone. So `True` ("the default store") is pinned to the
    bundle requests itself would use (certifi's), and msal, which calls the session without a
    `verify=` of its own, gets that trust on every request too.

    With `trust_env`, requests also scans the environment for proxies and reads ~/.netrc on every
    call (a measurable share of the CPU per event). The bridge authenticates with bearer tokens
    and pins its trust, so the environment matters only for a proxy: when none is configured the
    scan is switched off; when one is, requests keeps reading it (NO_PROXY included) as usual.
    """

    def __init__(self, verify: str | bool = True, pool_size: int = 32) -> None:
        super().__init__()
        self._pinned_verify: str | bool = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.trust_env = bool(getproxies())
        install_header_parser()

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._pinned_verify
        return super().request(method, url, *args, **kwargs)


# http.client reads every answer's headers with the `email` package's feed parser (about 0.2 ms an
# answer), and when the answer is multipart, as each Table transaction's is, the parser compiles a
# regular expression for its boundary, unique per answer so never cached: 1.3-1.4 ms per transaction.
# A Table transaction's answer then has its parts' headers parsed the same way. The parser below
# builds the same `HTTPMessage` for the plain shape every answer the bridge gets has ("Name: value"
# lines), and hands anything else (folded lines, a malformed line, a "From " line) to the stdlib
# parser unchanged. tests/unit/test_http_headers.py compares the two on both shapes.
_PLAIN_HEADER = re.compile(r"[\x21-\x39\x3b-\x7e]+:")  # email.feedparser's header name, never a continuation
_stdlib_parse_headers = http.client.parse_headers
_install_lock = threading.Lock()


def parse_headers(fp: BinaryIO, _class: type[http.client.HTTPMessage] = http.client.HTTPMessage) -> http.client.HTTPMessage:
    """`http.client.parse_headers`: the same message for the same bytes, without the feed parser
    when every line is a plain "Name: value"."""
    lines: list[bytes] = http.client._read_headers(fp)  # type: ignore[attr-defined]
    fields: list[tuple[str, str]] = []
    for raw in lines:
        line = raw.decode("iso-8859-1")
        line = line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line
        if not line:  # the blank line (or the end of the stream) that ends the headers
            break
        if "\r" in line or not _PLAIN_HEADER.match(line):  # the feed parser splits at a lone CR too
            return email.parser.Parser(_class=_class).parsestr(b"".join(lines).decode("iso-8859-1"))
        name, _, value = line.partition(":")
        fields.append((name, value.lstrip(" \t")))
    message = _class()
    for name, value in fields:
        message.set_raw(name, value)
    message.set_payload("")
    return message


def install_header_parser() -> None:
    """Make http.client use `parse_headers` (once per process; where the stdlib lacks the helper it
    builds on, the stdlib parser stays)."""
    with _install_lock:
        if http.client.parse_headers is _stdlib_parse_headers and hasattr(http.client, "_read_headers"):
            http.client.parse_headers = parse_headers  # type: ignore[assignment]
