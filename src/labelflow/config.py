"""Settings in one place.

Everything labelflow can be told comes from one :class:`Settings` object, read from (highest
precedence first) keyword arguments, ``LABELFLOW_*`` environment variables, an optional TOML
file named by ``LABELFLOW_CONFIG_FILE`` (or ``labelflow.toml`` in the working directory), and
the defaults below. By default every piece of state — the local broker, the SQLite catalog and
the blob store — lives under one data directory, so ``rm -rf .labelflow`` is a full reset.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from platformdirs import user_cache_dir
from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from labelflow.model import Status, Taxonomy
from labelflow.quality.annotations import ValidationRules
from labelflow.quality.samples import SampleRules
from labelflow.reconcile.settings import ReconcileSettings
from labelflow.snapshots.settings import SnapshotSettings
from labelflow.sources.labelstudio import LabelStudioOptions

DEFAULT_CONFIG_FILE = "labelflow.toml"


def config_file() -> Path:
    """The settings file: ``LABELFLOW_CONFIG_FILE``, else ``labelflow.toml`` here."""
    return Path(os.environ.get("LABELFLOW_CONFIG_FILE", DEFAULT_CONFIG_FILE))


class Settings(BaseSettings):
    """labelflow's configuration. Field names map to ``LABELFLOW_<NAME>`` variables."""

    model_config = SettingsConfigDict(env_prefix="LABELFLOW_", extra="ignore")

    data_dir: Path = Field(Path(".labelflow"), description="Where local state lives.")
    cache_dir: Path = Field(
        Path(user_cache_dir("labelflow")),
        description="Per-user cache (Kafka jars), shared by every data directory.",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING",
        description="Log level of every labelflow process (the supervisor runs its workers at "
        "INFO: their logs are read after the fact).",
    )
    log_format: Literal["console", "json"] | None = Field(
        None, description="Log lines as key=value or JSON; JSON when stderr is not a terminal."
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        None, description="An external cluster; when unset the local broker is used."
    )
    kafka_version: str = "4.1.1"
    kafka_host: str = "127.0.0.1"
    kafka_port: int = Field(9092, description="Local broker's client port.")
    kafka_controller_port: int = Field(9093, description="Local broker's KRaft controller port.")
    kafka_heap: str = "-Xms256m -Xmx1g"
    kafka_start_timeout_s: float = 90.0
    kafka_stop_timeout_s: float = 30.0
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: str | None = None
    kafka_ssl_certificate_location: str | None = None
    kafka_ssl_key_location: str | None = None
    kafka_client_extra: dict[str, str] = Field(
        default_factory=dict,
        description="Any other librdkafka property, passed through unchanged.",
    )

    # --- Topics ------------------------------------------------------------------------
    topic_partitions: int = Field(6, ge=1, description="Partitions of the pipeline topics.")
    topic_replication_factor: int = Field(1, ge=1)
    topic_prefix: str = Field("", description="Prefix for every topic name (shared clusters).")

    # --- Stage runtime -----------------------------------------------------------------
    # Each commit waits for the broker; below about a second per batch that wait dominates
    # (bench/runner_throughput.py: 100 ms batches run at a third of the rate of 1 s ones).
    batch_max_records: int = Field(
        5000, ge=1, description="Records per transaction at most (bounds memory and redo)."
    )
    batch_max_ms: int = Field(
        1000, ge=1, description="A transaction commits at least this often (bounds latency)."
    )
    transaction_timeout_ms: int = Field(
        60_000, description="Broker aborts a worker's open transaction after this."
    )
    session_timeout_ms: int = Field(
        10_000, description="A silent worker leaves its group (and partitions) after this."
    )
    shutdown_timeout_s: float = Field(
        20.0, description="On SIGTERM, how long finishing the open batch may take."
    )
    stall_after_s: float = Field(
        60.0, description="Lag with no progress for this long is reported as a stall."
    )
    retry_delays_s: list[float] = Field(
        default_factory=lambda: [1.0, 10.0, 60.0],
        description="Delay before each retry of a transient failure; then dead-letter.",
    )

    # --- Pipeline ----------------------------------------------------------------------
    taxonomy: Taxonomy = Field(default_factory=Taxonomy, description="Classes and mask indices.")
    accepted_statuses: list[Status] = Field(
        default_factory=lambda: [Status.SUBMITTED, Status.APPROVED],
        description="Revisions with these statuses become samples (others are skipped).",
    )
    validation: ValidationRules = Field(default_factory=ValidationRules)
    sample_rules: SampleRules = Field(default_factory=SampleRules)
    max_chip_size: int = Field(1024, ge=16, description="Longest chip side; larger is resampled.")
    materialize_threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Threads per materialize worker (GDAL and numpy release the GIL).",
    )
    imagery_timeout_s: float = Field(30.0, gt=0, description="Per HTTP request for imagery.")
    reconcile: ReconcileSettings = Field(
        default_factory=ReconcileSettings, description="Drift detection and repair."
    )

    # --- Sources -----------------------------------------------------------------------
    labelstudio_url: str | None = Field(
        None, description="Label Studio's base URL; the labelstudio stage reads tasks there."
    )
    labelstudio_token: SecretStr | None = Field(None, description="Label Studio API token.")
    labelstudio_webhook_secret: SecretStr | None = Field(
        None,
        description="Shared secret Label Studio sends with its webhooks; without it the "
        "webhook endpoint is off.",
    )
    labelstudio_project: int | None = Field(
        None,
        description="The Label Studio project labelflow follows: backfilled on first start, "
        "then polled (labelflow source add labelstudio sets it).",
    )
    labelstudio_mapping: LabelStudioOptions = Field(
        default_factory=LabelStudioOptions,
        description="Which task data keys hold the image, a stable id and georeference.",
    )
    labelstudio_read_original: bool = Field(
        False,
        description="Read chips from the GeoTIFF/COG named by the task data (scene + window) "
        "instead of the image Label Studio displayed; their sizes must agree.",
    )
    labelstudio_poll_interval_s: float = Field(
        5.0, gt=0, description="How often the project is polled for tasks changed since."
    )
    labelstudio_page_size: int = Field(
        100, ge=1, le=1000, description="Tasks per page when listing a project."
    )

    # --- Storage -----------------------------------------------------------------------
    catalog_url: str | None = Field(
        None, description="SQLAlchemy URL; SQLite in data_dir if unset."
    )
    blob_url: str | None = Field(None, description="Blob store root; data_dir/blobs if unset.")
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, env_settings, toml, file_secret_settings

    # --- Derived -----------------------------------------------------------------------
    @property
    def uses_local_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def uses_labelstudio(self) -> bool:
        """Whether Label Studio can be read: ``labelflow up`` then runs the labelstudio stage."""
        return bool(self.labelstudio_url and self.labelstudio_token)

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def resolved_catalog_url(self) -> str:
        return self.catalog_url or f"sqlite:///{(self.data_dir / 'catalog.db').resolve()}"

    @property
    def pipeline_config_hash(self) -> str:
        """Hash of every setting that shapes a sample, recorded in its lineage: two samples
        with the same inputs and the same hash were made the same way."""
        shaping = self.model_dump(
            mode="json",
            include={
                "taxonomy",
                "accepted_statuses",
                "validation",
                "sample_rules",
                "max_chip_size",
                "labelstudio_read_original",
            },
        )
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def resolved_blob_url(self) -> str:
        return self.blob_url or str((self.data_dir / "blobs").resolve())

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka properties common to every producer, consumer and admin client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.kafka_security_protocol,
        }
        optional = {
            "sasl.mechanism": self.kafka_sasl_mechanism,
            "sasl.username": self.kafka_sasl_username,
            "sasl.password": (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            ),
            "ssl.ca.location": self.kafka_ssl_ca_location,
            "ssl.certificate.location": self.kafka_ssl_certificate_location,
            "ssl.key.location": self.kafka_ssl_key_location,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(self.kafka_client_extra)
        return conf


def get_settings(**overrides: Any) -> Settings:
    """Build settings from the environment (and the config file), with explicit overrides."""
    return Settings(**overrides)
