"""The F&O token is handed out from memory for half its life; msal decides on every refresh."""

from __future__ import annotations

from typing import Any

import msal
import requests

from shared.fo.auth import MsalTokenProvider
from shared.settings import load_settings
from tests.unit.test_settings import BASE


class Msal(msal.ConfidentialClientApplication):  # type: ignore[misc]
    """msal's application as far as the provider uses it: each call answered with the next token."""

    def __init__(self, lifetime_s: int) -> None:  # no super().__init__: nothing of msal's runs
        self.lifetime_s, self.calls, self.removed = lifetime_s, 0, 0

    def acquire_token_for_client(self, scopes: list[str], **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {"access_token": f"token-{self.calls}", "expires_in": self.lifetime_s, "token_source": "identity_provider"}

    def remove_tokens_for_client(self) -> None:
        self.removed += 1


def provider(lifetime_s: int) -> tuple[MsalTokenProvider, Msal]:
    tokens = MsalTokenProvider(load_settings(BASE), requests.Session())
    app = Msal(lifetime_s)
    tokens._app = app
    return tokens, app


def test_a_token_is_handed_out_without_asking_msal_for_half_its_life() -> None:
    now = [1000.0]
    tokens, app = provider(3600)
    tokens._clock = lambda: now[0]
    assert [tokens.token() for _ in range(3)] == ["token-1"] * 3 and app.calls == 1
    now[0] += 1799
    assert tokens.token() == "token-1" and app.calls == 1
    now[0] += 2  # past half its life: msal decides (and refreshes, here)
    assert tokens.token() == "token-2" and app.calls == 2
    assert tokens.cache_hits == 3 and tokens.identity_provider_calls == 2


def test_a_refused_token_is_forgotten_at_once() -> None:
    tokens, app = provider(3600)
    assert tokens.token() == "token-1"
    tokens.invalidate()
    assert tokens.token() == "token-2" and app.removed == 1


def test_a_short_lived_token_is_always_asked_of_msal() -> None:
    tokens, app = provider(300)
    assert [tokens.token() for _ in range(3)] == ["token-1", "token-2", "token-3"] and app.calls == 3
