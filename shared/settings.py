"""Every app setting the bridge reads, in one pydantic model, validated at start-up.

pydantic-settings reads the environment itself: a field's app-setting name is its own name in
upper case (matched case-insensitively, as App Service does), except the three Service Bus
settings, whose names the Functions host fixes. An empty value counts as unset, because Core Tools
passes the empty strings of local.settings.json through and "" is never a useful path, URL or id.
A wrong or missing setting raises `ConfigError` whose message names each offending setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from shared.errors import ConfigError

#: What an App Service Key Vault reference looks like before the platform resolves it.
KEY_VAULT_REFERENCE = "@microsoft.keyvault("


class AuthMode(StrEnum):
    client_secret = "client_secret"  # noqa: S105 - a mode name, not a secret
    certificate = "certificate"
    managed_identity = "managed_identity"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, env_ignore_empty=True, extra="ignore", frozen=True)

    # --- F&O environment and its Entra app registration --------------------------------------
    fo_base_url: str
    fo_auth_mode: AuthMode = AuthMode.client_secret
    fo_tenant_id: str = ""
    fo_client_id: str = ""
    fo_client_secret: SecretStr | None = None
    fo_certificate_path: Path | None = None
    fo_certificate_password: SecretStr | None = None
    fo_managed_identity_client_id: str = ""
    fo_authority_host: str = "https://login.microsoftonline.com"
    fo_ca_bundle: Path | None = None

    # --- What the bridge sends ------------------------------------------------------------------
    fo_default_company: str = "USMF"
    fo_companies: str = ""
    fo_message_queue: str = "JmgMES3P"
    fo_journal_field_names: Literal["2024", "2022"] = "2024"
    fo_picking_batch_field: str = ""
    fo_quality_service_path: str = "MesBridgeServices/MesQualityService/reportQualityResult"
    # Journal names (Inventory management > Setup > Journal names > Inventory): a MES move posts in a
    # transfer journal, an adjustment with an offset account in a movement journal (README, "Journals").
    fo_transfer_journal_name: str = Field("ITrf", min_length=1)
    fo_movement_journal_name: str = Field("IMov", min_length=1)
    #: The main account an inventory adjustment posts against when the MES names none ("" = the MES must).
    fo_adjustment_offset_account: str = ""
    #: The sign F&O expects on a transfer line's quantity: UNCONFIRMED (the form shows the issue side).
    fo_transfer_quantity_sign: Literal["positive", "negative"] = "positive"
    fo_picking_list_journal_name: str = ""
    fo_route_card_journal_name: str = ""
    fo_report_finished_journal_name: str = ""

    # --- How the bridge calls F&O ---------------------------------------------------------------
    fo_connect_timeout_s: float = Field(5.0, gt=0)
    fo_read_timeout_s: float = Field(60.0, gt=0)
    fo_call_deadline_s: float = Field(120.0, gt=0)
    fo_backoff_base_s: float = Field(0.5, gt=0)
    fo_backoff_max_s: float = Field(30.0, gt=0)
    fo_retry_after_fallback_s: float = Field(30.0, gt=0)
    fo_max_concurrency: int = Field(16, ge=1, le=52)
    # This instance's fixed share of F&O's request budget (requests/s); unset: learned from 429s.
    # infra/ sets it only with foBudgetSharing=static: foBudgetPerSecond / maximumInstanceCount.
    fo_instance_budget_rps: float | None = Field(None, gt=0)
    # F&O's whole request budget for the app registration (requests/s): no instance goes above it,
    # and below it the pacer learns its share from 429s. infra/ sets it to foBudgetPerSecond.
    fo_budget_rps: float | None = Field(None, gt=0)
    message_lock_budget_s: float = Field(300.0, gt=0)

    # --- The pipeline ---------------------------------------------------------------------------
    max_message_bytes: int = Field(262_144, ge=1024)
    gate_gap_timeout_s: float = Field(600.0, gt=0)
    gate_require_start: bool = True
    gate_first_wait_s: float = Field(1.0, gt=0)
    gate_max_wait_s: float = Field(60.0, gt=0)
    #: How long an early message waits in memory for its predecessor, when this process is handling
    #: that one right now (shared/inbound/handoff.py); 0: it always waits in the ledger.
    gate_handoff_wait_s: float = Field(2.0, ge=0, le=30)
    retry_first_wait_s: float = Field(15.0, gt=0)
    retry_max_wait_s: float = Field(900.0, gt=0)
    retry_give_up_after_s: float = Field(86_400.0, gt=0)
    #: How long an in-doubt message waits for F&O's processed event before the bridge reads F&O itself.
    in_doubt_check_after_s: float = Field(300.0, gt=0)
    #: Per-order aggregation (shared/inbound/merge.py): at most this many waiting MES messages of one
    #: order and flow travel as one F&O message (1 = never merged). Each takes rows in the ledger's
    #: transaction of the merge (its row, its content index row, its held index row: 100 at most), hence 33.
    fo_merge_max_messages: int = Field(20, ge=1, le=33)
    #: ... and the merged `_messageContent` at most this many bytes: F&O's processed event echoes it whole.
    fo_merge_max_content_bytes: int = Field(65_536, ge=1024)
    #: How far a MES clock may run ahead of the bridge's: a later `occurred_at` is parked `clock_skew`.
    mes_max_clock_skew_s: float = Field(300.0, ge=0, le=86_400)

    # --- The plant's calendar: the business day of every date sent to F&O ------------------------
    plant_time_zone: str = "UTC"
    plant_time_zones: str = ""  # per site, overriding PLANT_TIME_ZONE: "1=America/Chicago,2=Europe/Berlin"

    # --- Table Storage --------------------------------------------------------------------------
    tables_connection_string: SecretStr | None = None
    tables_endpoint: str = ""
    tables_client_id: str = ""
    tables_prefix: str = Field("mesbridge", pattern=r"^[A-Za-z][A-Za-z0-9]{0,39}$")

    # --- Service Bus (the connection the triggers use; the host fixes these names) --------------
    servicebus_connection_string: SecretStr | None = Field(None, validation_alias="ServiceBusConnection")
    servicebus_namespace: str = Field("", validation_alias="ServiceBusConnection__fullyQualifiedNamespace")
    servicebus_client_id: str = Field("", validation_alias="ServiceBusConnection__clientId")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # App settings arrive as environment variables and nowhere else: no .env or secrets files
        # that could make a run on a laptop differ from the deployed app.
        return (init_settings, env_settings)

    @field_validator("fo_client_secret", "fo_certificate_password", "tables_connection_string", "servicebus_connection_string")
    @classmethod
    def _resolved(cls, value: SecretStr | None) -> SecretStr | None:
        # App Service resolves @Microsoft.KeyVault(...) before the worker starts; when it cannot
        # (the identity's role not yet effective, a wrong SecretUri), the reference itself arrives.
        if value is not None and value.get_secret_value().strip().lower().startswith(KEY_VAULT_REFERENCE):
            raise ValueError(
                "is still a Key Vault reference: the platform could not resolve it. Check that the app's "
                "identity holds Key Vault Secrets User on the vault and the SecretUri names an existing secret "
                "(the portal's Environment variables blade shows the reference status), then restart the app"
            )
        return value

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

    @field_validator("plant_time_zone")
    @classmethod
    def _one_zone(cls, value: str) -> str:
        return _iana_zone(value.strip())

    @field_validator("plant_time_zones")
    @classmethod
    def _zones_per_site(cls, value: str) -> str:
        sites: set[str] = set()
        for pair in _pairs(value):
            site, _, zone = pair.partition("=")
            if not zone.strip() or not site.strip():
                raise ValueError(f"{pair.strip()!r} is not <site>=<IANA time zone>, e.g. 1=America/Chicago")
            if site.strip().upper() in sites:
                raise ValueError(f"site {site.strip()} is listed twice")
            sites.add(site.strip().upper())
            _iana_zone(zone.strip())
        return value

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
        if self.fo_merge_max_content_bytes > self.max_message_bytes:
            problems.append(
                "FO_MERGE_MAX_CONTENT_BYTES: must not exceed MAX_MESSAGE_BYTES "
                f"({self.fo_merge_max_content_bytes} > {self.max_message_bytes}): a merged message is never larger "
                "than a message the bridge accepts alone"
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
    def plant_zones(self) -> tuple[tuple[str, str], ...]:
        """PLANT_TIME_ZONES as (site in upper case, IANA name) pairs."""
        return tuple(
            (site.strip().upper(), zone.strip()) for site, _, zone in (p.partition("=") for p in _pairs(self.plant_time_zones))
        )

    @property
    def fo_scope(self) -> str:
        return f"{self.fo_base_url}/.default"

    @property
    def tls_verify(self) -> str:
        """What `requests` gets as `verify=`: FO_CA_BUNDLE when set, else the bundle `requests` ships
        with (certifi's). Always a path: `True` would let REQUESTS_CA_BUNDLE replace the trust."""
        return str(self.fo_ca_bundle) if self.fo_ca_bundle else DEFAULT_CA_BUNDLE_PATH


def _pairs(value: str) -> list[str]:
    return [pair for pair in value.replace(";", ",").split(",") if pair.strip()]


def _iana_zone(name: str) -> str:
    # zoneinfo reads the system's database, else the tzdata package (Windows and the Functions
    # host have no system database: requirements.txt installs tzdata).
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name[:60]!r} is not an IANA time zone name, e.g. America/Chicago, Europe/Berlin or UTC") from None
    return name


class _Environ(EnvSettingsSource):
    """pydantic-settings' own environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def setting_name(field: str) -> str:
    """The app-setting name of a field of `Settings` (its alias, else its name in upper case)."""
    info = Settings.model_fields.get(field)
    if info is None:
        return field  # already an alias: pydantic reports errors by the name it read
    return info.validation_alias if isinstance(info.validation_alias, str) else field.upper()


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; `ConfigError` names every setting that is wrong.

    Without `environ`, pydantic-settings reads the process environment; with it (tests, devtools),
    the same source reads the mapping, so no test touches global state.
    """
    try:
        if environ is None:
            return Settings()
        return Settings.model_validate(_Environ(Settings, environ)())
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            name = setting_name(str(error["loc"][0])) if error["loc"] else ""
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"{name}: {message}" if name else message)
        raise ConfigError("invalid app settings: " + "; ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated once."""
    return load_settings()
