"""Configuration: one typed object built from env vars, an optional TOML file, and CLI flags.

Every other package takes plain constructor arguments; only `integration` reads configuration, so
a package can be reused (and tested) without this module.
"""

from __future__ import annotations

import os
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from acquisition.timestamps import site_zone

#: pydicom's registered root; a site should configure its own (MARROWLINK_UID_ROOT).
DEFAULT_UID_ROOT = "1.2.826.0.1.3680043.8.498."


#: What happens when an instance with an already stored SOP Instance UID arrives (dicom_store.DuplicatePolicy).
DuplicatePolicy = Literal["reject", "replace", "keep"]


class ApiToken(BaseModel):
    """A bearer token and who holds it; roles: viewer, technologist, pathologist, admin, integrator."""

    token: str
    user: str
    roles: list[str] = Field(default_factory=lambda: ["viewer"])


class RemoteAe(BaseModel):
    """A DICOM peer we may send to (C-MOVE destination, forwarding target)."""

    ae_title: str
    host: str
    port: int


class Settings(BaseSettings):
    """All settings; env vars are prefixed MARROWLINK_ (DATABASE_URL is also read bare)."""

    model_config = SettingsConfigDict(
        env_prefix="MARROWLINK_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    data_dir: Path = Field(
        default=Path("marrowlink-data"), validation_alias=AliasChoices("MARROWLINK_DATA", "data_dir")
    )
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "MARROWLINK_DATABASE_URL", "database_url")
    )
    #: The most connections all `serve` processes together open to a server database (PostgreSQL; SQLite
    #: needs none): each process's pool gets an equal share, at least 3. PostgreSQL allows 100 by default,
    #: and every HTTP worker process has a pool of its own.
    database_connections: int = Field(default=60, ge=3, le=10000)
    #: Celery broker (amqp://… for RabbitMQ, redis://… for Redis): import and analysis jobs go to
    #: `marrowlink worker` processes. None: they run in a pool inside `serve` (docs/deployment.md).
    broker_url: str | None = Field(default=None, validation_alias=AliasChoices("MARROWLINK_BROKER", "broker_url"))
    #: The broker queue the jobs go through: sites (or test and production) sharing one broker each need
    #: their own, or one's workers would take the other's job ids.
    broker_queue: str = Field(default="marrowlink.jobs", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:-]+$")
    #: Jobs `serve` runs at once without a broker (each analysis already uses every core).
    job_threads: int = Field(default=1, ge=1, le=32)
    #: How long a job's claim holds without renewal: a runner that died gives its job up after this.
    job_lease_s: float = Field(default=120.0, ge=5.0, le=86400.0)
    #: Folder the scanner's Metafer exports are dropped into (`serve --watch DIR`); None: no watch folder.
    watch_dir: Path | None = Field(default=None, validation_alias=AliasChoices("MARROWLINK_WATCH", "watch_dir"))
    #: A watched export folder is taken once its manifest is there and nothing in it changed for this long.
    watch_settle_s: float = Field(default=10.0, ge=0.0, le=3600.0)
    #: How often the watch folder is looked at.
    watch_interval_s: float = Field(default=2.0, gt=0.0, le=600.0)

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    #: HTTP server processes on the one port (Linux SO_REUSEPORT; the kernel spreads connections):
    #: the main process (which also runs DIMSE and MLLP) plus ``http_workers - 1``
    #: processes that serve only the HTTP app over the same data dir and index. 0: one per CPU core
    #: available to us, at most 8.
    http_workers: int = Field(default=0, ge=0, le=64)
    #: Answer WADO-RS frames requests inside the HTTP server's protocol handler, below ASGI (same bytes,
    #: metrics and auth; about half the CPU per frame). Off: every request goes through the ASGI app.
    http_fast_frames: bool = True
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    mllp_host: str = "0.0.0.0"
    mllp_port: int = 2575
    public_url: str | None = None  # base URL that links in HL7/SR point to; default http://host:port

    ae_title: str = "MARROWLINK"
    #: Calling AE titles accepted by the SCP; empty means any.
    allowed_aes: list[str] = Field(default_factory=list)
    remote_aes: list[RemoteAe] = Field(default_factory=list)
    #: TLS for the DIMSE SCP (PS3.15 B.1): certificate and key (PEM); with a CA file, clients must
    #: present a certificate signed by it.
    dicom_tls_cert: Path | None = None
    dicom_tls_key: Path | None = None
    dicom_tls_ca: Path | None = None
    forward_to: str | None = None  # AE title (from remote_aes) to forward results to

    #: The LIS's MLLP listener ("HOST:PORT") that receives ORU^R01 results; none: results are not sent.
    lis_destination: str | None = None
    #: Receiving application/facility put into MSH-5/MSH-6 of results.
    lis_application: str = "LIS"
    lis_facility: str = ""

    #: Folder with trained models in seg/, cls/ and aoi/ (default: the compact models shipped in ai/weights).
    models_dir: Path | None = None

    uid_root: str = DEFAULT_UID_ROOT
    #: The lab or hospital, as signed reports name it (Verifying Organization) when a signer's account has none.
    organization: str = ""
    #: The site's time zone (IANA name, e.g. Europe/Berlin): local times without an offset (HL7 DTM, DICOM
    #: DA/TM) are read in it, and outbound HL7 and DICOM carry its offset. Default: the host's zone.
    timezone: str | None = None
    duplicate_policy: DuplicatePolicy = "reject"
    max_request_bytes: int = 2 * 1024**3

    tokens: list[ApiToken] = Field(default_factory=list)
    dicomweb_public_read: bool = False
    cors_origins: list[str] = Field(default_factory=list)

    config_file: Path | None = Field(default=None, validation_alias=AliasChoices("MARROWLINK_CONFIG", "config_file"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("MARROWLINK_CONFIG")
        if toml_path:
            if not Path(toml_path).is_file():
                raise FileNotFoundError(f"MARROWLINK_CONFIG points to {toml_path!r}, which is not a file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _listeners_on_distinct_ports(self) -> Settings:
        """Two listeners told to share a port would fail at bind time, after part of the service started."""
        ports = {"http_port": self.http_port, "dicom_port": self.dicom_port, "mllp_port": self.mllp_port}
        seen: dict[int, str] = {}
        for name, number in ports.items():
            if number in seen:
                raise ValueError(f"{seen[number]} and {name} are both {number}: each listener needs a port of its own")
            seen[number] = name
        return self

    @model_validator(mode="after")
    def _known_time_zone(self) -> Settings:
        site_zone(self.timezone)  # raises ValueError naming the value when it is not an IANA zone
        return self

    @property
    def zone(self) -> tzinfo:
        """The site's time zone as a tzinfo (acquisition.timestamps.site_zone)."""
        return site_zone(self.timezone)

    @property
    def effective_database_url(self) -> str:
        """SQLite (WAL) under the data dir unless DATABASE_URL names another database."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"

    def model_dir(self, kind: str) -> Path | None:
        """Where the model of a kind (seg, cls, aoi) comes from; None means the shipped default."""
        return self.models_dir / kind if self.models_dir else None

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "::") else self.http_host
        return f"http://{host}:{self.http_port}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from env/TOML with CLI overrides (None values are ignored so defaults stay)."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
