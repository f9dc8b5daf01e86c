"""The one HTTP session type the bridge uses, for F&O and for Entra alike."""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH


class PinnedTrustSession(requests.Session):
    """A pooled session whose certificate trust cannot be changed by the environment.

    `requests` lets REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) replace `verify=True`, on the session and
    per request alike; only a path is left alone. So `True` ("the default store") is pinned to the
    bundle requests itself would use (certifi's), and msal, which calls the session without a
    `verify=` of its own, gets that trust on every request too.
    """

    def __init__(self, verify: str | bool = True, pool_size: int = 32) -> None:
        super().__init__()
        self._pinned_verify: str | bool = DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._pinned_verify
        return super().request(method, url, *args, **kwargs)
