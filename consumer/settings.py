"""Settings, built once in ``main`` and passed down explicitly.

Names are a contract (the README's Configuration table; the seed documents' names where
they had one): they are read from the environment or a ``.env`` file. Secrets are
``SecretStr`` so they never show up in a repr or a log line.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

# Package data (consumer/minio-notify.json, a link to the repository's file), so the
# default is found in a checkout, an editable install and an installed wheel alike.
DEFAULT_NOTIFY_CONFIG = Path(str(files("consumer").joinpath("minio-notify.json")))


class Settings(BaseSettings):
    """Every knob of the consumer; environment names are given by each field's alias."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # --- MinIO -------------------------------------------------------------------------
    minio_endpoint: str = Field("127.0.0.1:9000", alias="MINIO_ENDPOINT")
    minio_access_key: str = Field("", alias="MINIO_ACCESS_KEY")
    minio_secret_key: SecretStr = Field(SecretStr(""), alias="MINIO_SECRET_KEY")
    minio_use_ssl: bool = Field(False, alias="MINIO_USE_SSL")
    minio_cert_path: Path | None = Field(None, alias="MINIO_CERT_PATH")
    minio_region: str = Field("us-east-1", alias="MINIO_REGION")
    minio_bucket_name: str = Field("voxpersona-storage", alias="MINIO_BUCKET_NAME")
    minio_audio_bucket_name: str = Field("voxpersona-audio", alias="MINIO_AUDIO_BUCKET_NAME")
    minio_results_bucket_name: str = Field("processed-results", alias="MINIO_RESULTS_BUCKET_NAME")
    minio_max_retries: int = Field(3, ge=0, le=100, alias="MINIO_MAX_RETRIES")
    minio_retry_backoff: float = Field(2.0, gt=0, le=600, alias="MINIO_RETRY_BACKOFF")
    minio_max_file_size: int = Field(2 * 1024**3, gt=0, alias="MINIO_MAX_FILE_SIZE")
    minio_cleanup_days: int = Field(30, ge=0, alias="MINIO_CLEANUP_DAYS")
    minio_health_check_interval: float = Field(60.0, gt=0, alias="MINIO_HEALTH_CHECK_INTERVAL")
    minio_notify_config: Path = Field(DEFAULT_NOTIFY_CONFIG, alias="MINIO_NOTIFY_CONFIG")
    # Least-privilege identities, created by `setup --identities` (run with the root keys
    # above); the consumer then runs with MINIO_ACCESS_KEY/SECRET_KEY set to its own pair.
    minio_consumer_access_key: str = Field(
        "voxpersona-consumer", min_length=3, alias="MINIO_CONSUMER_ACCESS_KEY"
    )
    minio_consumer_secret_key: SecretStr = Field(SecretStr(""), alias="MINIO_CONSUMER_SECRET_KEY")
    minio_uploader_access_key: str = Field(
        "voxpersona-uploader", min_length=3, alias="MINIO_UPLOADER_ACCESS_KEY"
    )
    minio_uploader_secret_key: SecretStr = Field(SecretStr(""), alias="MINIO_UPLOADER_SECRET_KEY")
    # Their canned policies are "<prefix>-consumer" and "<prefix>-uploader": deployments
    # sharing one MinIO give each its own prefix.
    minio_identity_policy_prefix: str = Field(
        "voxpersona",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,54}$",
        alias="MINIO_IDENTITY_POLICY_PREFIX",
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka_events_topic: str = Field("minio-events", alias="KAFKA_EVENTS_TOPIC")
    kafka_dlq_topic: str = Field("minio-events-dlq", alias="KAFKA_DLQ_TOPIC")
    kafka_group_id: str = Field("indexer", alias="KAFKA_GROUP_ID")
    kafka_events_partitions: int = Field(4, ge=1, le=1000, alias="KAFKA_EVENTS_PARTITIONS")
    kafka_replication_factor: int = Field(1, ge=1, le=7, alias="KAFKA_REPLICATION_FACTOR")
    # Encryption and authentication of every Kafka client (consumer/kafka/clients.py). The
    # SASL credentials are used only with a SASL_* protocol, the TLS files only with *SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", alias="KAFKA_SECURITY_PROTOCOL"
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", alias="KAFKA_SASL_MECHANISM"
    )
    kafka_sasl_username: str = Field("", alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr = Field(SecretStr(""), alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_cafile: Path | None = Field(None, alias="KAFKA_SSL_CAFILE")
    kafka_ssl_certfile: Path | None = Field(None, alias="KAFKA_SSL_CERTFILE")
    kafka_ssl_keyfile: Path | None = Field(None, alias="KAFKA_SSL_KEYFILE")

    # --- Service ---------------------------------------------------------------------
    health_host: str = Field("127.0.0.1", alias="HEALTH_HOST")
    health_port: int = Field(8080, ge=0, le=65535, alias="HEALTH_PORT")
    # /readyz and /status answer from checks at most this old (0: every request checks);
    # requests that arrive while a round of checks runs wait for it instead.
    health_cache_s: float = Field(2.0, ge=0, le=60, alias="HEALTH_CACHE_S")
    log_level: str = Field("info", alias="LOG_LEVEL")

    # --- Indexer ---------------------------------------------------------------------
    indexer_batch_max_records: int = Field(
        2000, ge=1, le=100_000, alias="INDEXER_BATCH_MAX_RECORDS"
    )
    indexer_max_message_bytes: int = Field(1_048_576, ge=1024, alias="INDEXER_MAX_MESSAGE_BYTES")
    # Seconds between two counts of objects and bytes per bucket (the index_objects and
    # index_size gauges). Unset: MINIO_HEALTH_CHECK_INTERVAL, the seed documents' name for
    # the periodic check, so deployments that set it keep their interval.
    index_storage_count_interval_s: float | None = Field(
        None, gt=0, le=86_400, alias="INDEX_STORAGE_COUNT_INTERVAL_S"
    )
    shutdown_grace_s: float = Field(30.0, gt=0, le=3600, alias="SHUTDOWN_GRACE_S")
    index_journal_retention_days: int = Field(90, ge=0, alias="INDEX_JOURNAL_RETENTION_DAYS")

    # --- Index -------------------------------------------------------------------------
    index_url: str = Field("sqlite:///voxpersona-index.sqlite3", alias="INDEX_URL")
    # First delay of the retries while the index is unavailable (doubling, capped at 30 s).
    index_retry_backoff_s: float = Field(0.5, gt=0, le=60, alias="INDEX_RETRY_BACKOFF_S")

    # --- Processing (role "processor") ---------------------------------------------------
    kafka_processor_group_id: str = Field("processor", alias="KAFKA_PROCESSOR_GROUP_ID")
    # The consumer group of VoxClient.processed(): the bot's feed of finished results.
    kafka_results_group_id: str = Field("bot-results", alias="KAFKA_RESULTS_GROUP_ID")
    processing_concurrency: int = Field(4, ge=1, le=256, alias="PROCESSING_CONCURRENCY")
    # Larger messages are malformed for the processor (dead-lettered where it owns them).
    # Unset: INDEXER_MAX_MESSAGE_BYTES, so both roles of one deployment agree on what is
    # too large unless told otherwise.
    processing_max_message_bytes: int | None = Field(
        None, ge=1024, alias="PROCESSING_MAX_MESSAGE_BYTES"
    )
    processing_timeout_s: float = Field(600.0, gt=0, le=86_400, alias="PROCESSING_TIMEOUT_S")
    # A running job's lease: renewed every quarter of it while the job runs (so a job of
    # any length keeps it), it lets another processor take the job over this long after its
    # runner died (kill -9, lost host). Shorter: faster takeover; longer: more tolerance
    # for an index that stalls the renewals.
    processing_lease_s: float = Field(120.0, ge=2, le=86_400, alias="PROCESSING_LEASE_S")
    # Who dead-letters malformed messages: the indexer does. A processor does too when it
    # runs without an indexer in its process (`run --role processor`) unless this is false
    # (set it false where separate indexer processes read the same topic).
    processing_dead_letter_malformed: bool | None = Field(
        None, alias="PROCESSING_DEAD_LETTER_MALFORMED"
    )
    # A JSON file of rules (see infra/processing-rules.example.json); unset: the built-in rule
    # (audio files in MINIO_AUDIO_BUCKET_NAME → audio-probe, transcribe).
    processing_rules_file: Path | None = Field(None, alias="PROCESSING_RULES_FILE")
    # The transcription API (OpenAI-compatible); the processor is off while the URL is unset.
    transcribe_base_url: str | None = Field(None, alias="TRANSCRIBE_BASE_URL")
    transcribe_api_key: SecretStr = Field(SecretStr(""), alias="TRANSCRIBE_API_KEY")
    transcribe_model: str = Field("whisper-1", alias="TRANSCRIBE_MODEL")
    transcribe_max_bytes: int = Field(25 * 1024**2, gt=0, alias="TRANSCRIBE_MAX_BYTES")
    transcribe_timeout_s: float = Field(300.0, gt=0, le=3600, alias="TRANSCRIBE_TIMEOUT_S")

    # --- Retention (role "retention"; lifecycle rules by setup) ---------------------------
    # A JSON file of policies (see infra/retention-policies.example.json); unset: one policy,
    # "cleanup", of MINIO_BUCKET_NAME after MINIO_CLEANUP_DAYS (0 turns it off).
    retention_policies_file: Path | None = Field(None, alias="RETENTION_POLICIES_FILE")
    retention_sweep_interval_s: float = Field(
        3600.0, gt=0, le=7 * 86_400, alias="RETENTION_SWEEP_INTERVAL_S"
    )
    # Objects per multi-object delete request (S3 allows at most 1000).
    retention_batch_size: int = Field(500, ge=1, le=1000, alias="RETENTION_BATCH_SIZE")
    # Deletions per second, at most: a sweep never floods MinIO or the events topic.
    retention_delete_rate: float = Field(50.0, gt=0, le=10_000, alias="RETENTION_DELETE_RATE")
    # The sweeper deletes nothing while the indexer's group is more events than this
    # behind the events topic: the index could be stale.
    retention_max_lag: int = Field(1000, ge=0, alias="RETENTION_MAX_LAG")

    @field_validator("minio_endpoint")
    @classmethod
    def _endpoint_is_host_port(cls, value: str) -> str:
        # minio-py wants "host[:port]" without a scheme; accept a URL and strip it, since
        # that is the most common copy-paste mistake.
        for scheme in ("http://", "https://"):
            if value.startswith(scheme):
                value = value[len(scheme) :]
        value = value.rstrip("/")
        if not value or "/" in value:
            raise ValueError("MINIO_ENDPOINT must be host:port, e.g. 127.0.0.1:9000")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().lower()
        if level not in _LOG_LEVELS:
            raise ValueError(f"{value!r} is not a level: use one of {', '.join(_LOG_LEVELS)}")
        return level

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers_not_empty(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers:
            raise ValueError("KAFKA_BOOTSTRAP_SERVERS must name at least one host:port")
        return ",".join(servers)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        # Kafka's own configs spell these upper case; accept "sasl_ssl" as well.
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def secret_values(self) -> tuple[str, ...]:
        """Values that must never appear in a log line: keys, the index's and Kafka's passwords."""
        password = urlsplit(self.index_url).password if "://" in self.index_url else None
        return tuple(
            value
            for value in (
                self.minio_access_key,
                self.minio_secret_key.get_secret_value(),
                self.transcribe_api_key.get_secret_value(),
                self.minio_consumer_secret_key.get_secret_value(),
                self.minio_uploader_secret_key.get_secret_value(),
                self.kafka_sasl_password.get_secret_value(),
                password,
                unquote(password) if password else None,
            )
            if value
        )

    @property
    def storage_count_interval_s(self) -> float:
        """INDEX_STORAGE_COUNT_INTERVAL_S, or MINIO_HEALTH_CHECK_INTERVAL when it is unset."""
        if self.index_storage_count_interval_s is not None:
            return self.index_storage_count_interval_s
        return self.minio_health_check_interval

    @property
    def processing_message_bytes(self) -> int:
        """PROCESSING_MAX_MESSAGE_BYTES, or INDEXER_MAX_MESSAGE_BYTES when it is unset."""
        if self.processing_max_message_bytes is not None:
            return self.processing_max_message_bytes
        return self.indexer_max_message_bytes

    @property
    def managed_buckets(self) -> tuple[str, ...]:
        """The buckets this project owns, in the order setup creates them."""
        return (
            self.minio_audio_bucket_name,
            self.minio_bucket_name,
            self.minio_results_bucket_name,
        )
