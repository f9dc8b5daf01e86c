"""The one HTTP session type the bridge uses, for F&O and for Entra alike."""

from __future__ import annotations

from typing import Any
from urllib.request import getproxies

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH


class PinnedTrustSession(requests.Session):
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

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._pinned_verify
        return super().request(method, url, *args, **kwargs)
