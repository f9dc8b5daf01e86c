"""Every app setting the bridge reads, in one pydantic model, validated at start-up.

Names are the app-setting names of the Function App (environment variables). A wrong or missing
setting raises `ConfigError` whose message names each offending setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError


class AuthMode(StrEnum):
    client_secret = "client_secret"  # noqa: S105 - a mode name, not a secret
    certificate = "certificate"
    managed_identity = "managed_identity"


def _env(name: str, *more: str) -> AliasChoices:
    return AliasChoices(name, *more)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- F&O environment and its Entra app registration --------------------------------------
    fo_base_url: str = Field(validation_alias=_env("FO_BASE_URL"))
    fo_auth_mode: AuthMode = Field(AuthMode.client_secret, validation_alias=_env("FO_AUTH_MODE"))
    fo_tenant_id: str = Field("", validation_alias=_env("FO_TENANT_ID"))
    fo_client_id: str = Field("", validation_alias=_env("FO_CLIENT_ID"))
    fo_client_secret: SecretStr | None = Field(None, validation_alias=_env("FO_CLIENT_SECRET"))
    fo_certificate_path: Path | None = Field(None, validation_alias=_env("FO_CERTIFICATE_PATH"))
    fo_certificate_password: SecretStr | None = Field(None, validation_alias=_env("FO_CERTIFICATE_PASSWORD"))
    fo_managed_identity_client_id: str = Field("", validation_alias=_env("FO_MANAGED_IDENTITY_CLIENT_ID"))
    fo_authority_host: str = Field("https://login.microsoftonline.com", validation_alias=_env("FO_AUTHORITY_HOST"))
    fo_ca_bundle: Path | None = Field(None, validation_alias=_env("FO_CA_BUNDLE"))

    # --- What the bridge sends ------------------------------------------------------------------
    fo_default_company: str = Field("USMF", validation_alias=_env("FO_DEFAULT_COMPANY"))
    fo_companies: str = Field("", validation_alias=_env("FO_COMPANIES"))
    fo_message_queue: str = Field("JmgMES3P", validation_alias=_env("FO_MESSAGE_QUEUE"))
    fo_journal_field_names: Literal["2024", "2022"] = Field("2024", validation_alias=_env("FO_JOURNAL_FIELD_NAMES"))
    fo_picking_batch_field: str = Field("", validation_alias=_env("FO_PICKING_BATCH_FIELD"))
    fo_quality_service_path: str = Field(
        "MesBridgeServices/MesQualityService/reportQualityResult",
        validation_alias=_env("FO_QUALITY_SERVICE_PATH"),
    )
    fo_movement_journal_name: str = Field("IMov", validation_alias=_env("FO_MOVEMENT_JOURNAL_NAME"))
    fo_picking_list_journal_name: str = Field("", validation_alias=_env("FO_PICKING_LIST_JOURNAL_NAME"))
    fo_route_card_journal_name: str = Field("", validation_alias=_env("FO_ROUTE_CARD_JOURNAL_NAME"))
    fo_report_finished_journal_name: str = Field("", validation_alias=_env("FO_REPORT_FINISHED_JOURNAL_NAME"))

    # --- How the bridge calls F&O ---------------------------------------------------------------
    fo_connect_timeout_s: float = Field(5.0, gt=0, validation_alias=_env("FO_CONNECT_TIMEOUT_S"))
    fo_read_timeout_s: float = Field(60.0, gt=0, validation_alias=_env("FO_READ_TIMEOUT_S"))
    fo_call_deadline_s: float = Field(120.0, gt=0, validation_alias=_env("FO_CALL_DEADLINE_S"))
    fo_backoff_base_s: float = Field(0.5, gt=0, validation_alias=_env("FO_BACKOFF_BASE_S"))
    fo_backoff_max_s: float = Field(30.0, gt=0, validation_alias=_env("FO_BACKOFF_MAX_S"))
    fo_retry_after_fallback_s: float = Field(30.0, gt=0, validation_alias=_env("FO_RETRY_AFTER_FALLBACK_S"))
    fo_max_concurrency: int = Field(16, ge=1, le=52, validation_alias=_env("FO_MAX_CONCURRENCY"))
    message_lock_budget_s: float = Field(300.0, gt=0, validation_alias=_env("MESSAGE_LOCK_BUDGET_S"))

    # --- The pipeline ---------------------------------------------------------------------------
    max_message_bytes: int = Field(262_144, ge=1024, validation_alias=_env("MAX_MESSAGE_BYTES"))
    gate_gap_timeout_s: float = Field(600.0, gt=0, validation_alias=_env("GATE_GAP_TIMEOUT_S"))
    gate_require_start: bool = Field(True, validation_alias=_env("GATE_REQUIRE_START"))
    gate_first_wait_s: float = Field(1.0, gt=0, validation_alias=_env("GATE_FIRST_WAIT_S"))
    gate_max_wait_s: float = Field(60.0, gt=0, validation_alias=_env("GATE_MAX_WAIT_S"))
    retry_first_wait_s: float = Field(15.0, gt=0, validation_alias=_env("RETRY_FIRST_WAIT_S"))
    retry_max_wait_s: float = Field(900.0, gt=0, validation_alias=_env("RETRY_MAX_WAIT_S"))
    retry_give_up_after_s: float = Field(86_400.0, gt=0, validation_alias=_env("RETRY_GIVE_UP_AFTER_S"))

    # --- Table Storage --------------------------------------------------------------------------
    tables_connection_string: SecretStr | None = Field(None, validation_alias=_env("TABLES_CONNECTION_STRING"))
    tables_endpoint: str = Field("", validation_alias=_env("TABLES_ENDPOINT"))
    tables_client_id: str = Field("", validation_alias=_env("TABLES_CLIENT_ID"))
    tables_prefix: str = Field(
        "mesbridge",
        pattern=r"^[A-Za-z][A-Za-z0-9]{0,39}$",
        validation_alias=_env("TABLES_PREFIX"),
    )

    # --- Service Bus (the same connection the triggers use) -------------------------------------
    servicebus_connection_string: SecretStr | None = Field(None, validation_alias=_env("ServiceBusConnection"))
    servicebus_namespace: str = Field("", validation_alias=_env("ServiceBusConnection__fullyQualifiedNamespace"))
    servicebus_client_id: str = Field("", validation_alias=_env("ServiceBusConnection__clientId"))

    @field_validator("fo_base_url")
    @classmethod
    def _https_base_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL of the F&O environment, e.g. https://contoso.operations.dynamics.com")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.strip().rstrip("/")

    @field_validator("fo_authority_host")
    @classmethod
    def _https_authority(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL, e.g. https://login.microsoftonline.com")
        return value.strip().rstrip("/")

    @field_validator("fo_ca_bundle", "fo_certificate_path")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    @field_validator("fo_quality_service_path")
    @classmethod
    def _service_path(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if len(parts) != 3 or not all(parts):
            raise ValueError("must be <service group>/<service>/<operation>")
        return "/".join(parts)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems: list[str] = []
        if self.fo_auth_mode is not AuthMode.managed_identity:
            if not self.fo_tenant_id:
                problems.append("FO_TENANT_ID: required with FO_AUTH_MODE=" + self.fo_auth_mode.value)
            if not self.fo_client_id:
                problems.append("FO_CLIENT_ID: required with FO_AUTH_MODE=" + self.fo_auth_mode.value)
        if self.fo_auth_mode is AuthMode.client_secret and not self.fo_client_secret:
            problems.append("FO_CLIENT_SECRET: required with FO_AUTH_MODE=client_secret")
        if self.fo_auth_mode is AuthMode.certificate and not self.fo_certificate_path:
            problems.append("FO_CERTIFICATE_PATH: required with FO_AUTH_MODE=certificate")
        if not self.tables_connection_string and not self.tables_endpoint:
            problems.append("TABLES_CONNECTION_STRING or TABLES_ENDPOINT: one of them is required")
        if self.fo_call_deadline_s >= self.message_lock_budget_s:
            problems.append(
                "FO_CALL_DEADLINE_S: must stay below MESSAGE_LOCK_BUDGET_S "
                f"({self.fo_call_deadline_s} >= {self.message_lock_budget_s}), or a message lock expires mid-call"
            )
        if self.fo_default_company.upper() not in self.companies:
            problems.append("FO_COMPANIES: must include FO_DEFAULT_COMPANY")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def companies(self) -> frozenset[str]:
        """Legal entities (dataAreaId, upper case) the bridge may write to."""
        listed = {c.strip().upper() for c in self.fo_companies.split(",") if c.strip()}
        return frozenset(listed or {self.fo_default_company.upper()})

    @property
    def fo_scope(self) -> str:
        return f"{self.fo_base_url}/.default"

    @property
    def tls_verify(self) -> str | bool:
        """What `requests` gets as `verify=`: the CA bundle when set, else the system store."""
        return str(self.fo_ca_bundle) if self.fo_ca_bundle else True


def _setting_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else ""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return field


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; `ConfigError` names every setting that is wrong."""
    source = dict(os.environ if environ is None else environ)
    try:
        # Settings reads os.environ itself; passing the mapping keeps tests free of global state.
        values = {
            info.validation_alias.choices[0]: source[key]
            for name, info in Settings.model_fields.items()
            for key in source
            if isinstance(info.validation_alias, AliasChoices) and key.lower() == str(info.validation_alias.choices[0]).lower()
        }
        return Settings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = _setting_name(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {message}" if name else message)
        raise ConfigError("invalid app settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return load_settings()
