"""Settings, built once in ``main`` and passed down explicitly.

Names are a contract (the manual's settings reference is written from these fields; the
seed documents' names where they had one): they are read from the environment or a
``.env`` file. Secrets are
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
    """Every knob of the consumer; environment names are given by each field's alias, and
    each field's description is its line in the manual's settings reference."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # --- MinIO -------------------------------------------------------------------------
    minio_endpoint: str = Field(
        "127.0.0.1:9000",
        alias="MINIO_ENDPOINT",
        description="host:port of MinIO's S3 API (a URL's scheme is stripped). Presigned URLs "
        "carry this host: sign with the endpoint the uploader reaches",
    )
    minio_access_key: str = Field(
        "",
        alias="MINIO_ACCESS_KEY",
        description="MinIO access key: the root keys for setup, the consumer identity's for "
        "run (see Least privilege)",
    )
    minio_secret_key: SecretStr = Field(
        SecretStr(""), alias="MINIO_SECRET_KEY", description="its secret key"
    )
    minio_use_ssl: bool = Field(
        False,
        alias="MINIO_USE_SSL",
        description="TLS to MinIO, the certificate and host name verified, for every MinIO "
        "connection of the package",
    )
    minio_cert_path: Path | None = Field(
        None,
        alias="MINIO_CERT_PATH",
        description="PEM CA bundle MinIO's certificate is verified against (unset: the "
        "system's CAs); missing or not PEM: exit 2",
    )
    minio_region: str = Field(
        "us-east-1",
        alias="MINIO_REGION",
        description="the region requests (presigned ones too) are signed for and setup creates "
        "buckets in",
    )
    minio_bucket_name: str = Field(
        "voxpersona-storage",
        alias="MINIO_BUCKET_NAME",
        description="general storage bucket (the default retention policy cleanup's)",
    )
    minio_audio_bucket_name: str = Field(
        "voxpersona-audio",
        alias="MINIO_AUDIO_BUCKET_NAME",
        description="the voice recordings: presigned uploads, upload and import write here, "
        "and the built-in processing rule watches it",
    )
    minio_results_bucket_name: str = Field(
        "processed-results",
        alias="MINIO_RESULTS_BUCKET_NAME",
        description="processing results, one JSON document per object and processor",
    )
    minio_max_retries: int = Field(
        3,
        ge=0,
        le=100,
        alias="MINIO_MAX_RETRIES",
        description="retries of transient MinIO failures (uploads, downloads, reads) and of "
        "a processing job's transient failures",
    )
    minio_retry_backoff: float = Field(
        2.0,
        gt=0,
        le=600,
        alias="MINIO_RETRY_BACKOFF",
        description="seconds: the first delay of those retries (exponential, full jitter)",
    )
    minio_max_file_size: int = Field(
        2 * 1024**3,
        gt=0,
        alias="MINIO_MAX_FILE_SIZE",
        description="bytes: the largest object processed, and the size limit of a presigned "
        "upload's POST policy",
    )
    minio_read_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        alias="MINIO_READ_TIMEOUT_S",
        description="how long a MinIO request waits for the next bytes of its answer before "
        "it fails and is retried: a stalled connection ends within this",
    )
    minio_cleanup_days: int = Field(
        30,
        ge=0,
        alias="MINIO_CLEANUP_DAYS",
        description="age in days of the default retention policy cleanup of "
        "MINIO_BUCKET_NAME, used without RETENTION_POLICIES_FILE (0: off)",
    )
    minio_health_check_interval: float = Field(
        60.0,
        gt=0,
        alias="MINIO_HEALTH_CHECK_INTERVAL",
        description="the seed documents' name, kept working: its only use is as the default "
        "of INDEX_STORAGE_COUNT_INTERVAL_S (seconds)",
    )
    minio_notify_config: Path = Field(
        DEFAULT_NOTIFY_CONFIG,
        alias="MINIO_NOTIFY_CONFIG",
        description="the bucket-notification file setup applies (the repository's "
        "minio-notify.json, shipped in the wheel)",
    )
    # Least-privilege identities, created by `setup --identities` (run with the root keys
    # above); the consumer then runs with MINIO_ACCESS_KEY/SECRET_KEY set to its own pair.
    minio_consumer_access_key: str = Field(
        "voxpersona-consumer",
        min_length=3,
        alias="MINIO_CONSUMER_ACCESS_KEY",
        description="the consumer's own MinIO identity, made by setup --identities",
    )
    minio_consumer_secret_key: SecretStr = Field(
        SecretStr(""),
        alias="MINIO_CONSUMER_SECRET_KEY",
        description="its secret (unset: setup --identities generates one into the --secrets-file)",
    )
    minio_uploader_access_key: str = Field(
        "voxpersona-uploader",
        min_length=3,
        alias="MINIO_UPLOADER_ACCESS_KEY",
        description="the uploader's identity: it signs presigned uploads, so a leaked URL "
        "can only ever put audio",
    )
    minio_uploader_secret_key: SecretStr = Field(
        SecretStr(""),
        alias="MINIO_UPLOADER_SECRET_KEY",
        description="its secret (set: presigned uploads are signed with the uploader "
        "identity; unset: with MINIO_ACCESS_KEY)",
    )
    minio_identity_policy_prefix: str = Field(
        "voxpersona",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,54}$",
        alias="MINIO_IDENTITY_POLICY_PREFIX",
        description="the identities' canned policies are <prefix>-consumer and "
        "<prefix>-uploader: deployments sharing one MinIO give each its own prefix",
    )

    minio_metrics_auth: Literal["jwt", "public"] = Field(
        "jwt",
        alias="MINIO_METRICS_AUTH",
        description="how MinIO's queue for the notify target is read from its metrics "
        "(/minio/v2/metrics/cluster): jwt signs a bearer token with MINIO_ACCESS_KEY/"
        "MINIO_SECRET_KEY (their policy needs admin:Prometheus; the consumer identity's "
        "has it), public sends none (a server run with MINIO_PROMETHEUS_AUTH_TYPE=public)",
    )
    minio_metrics_interval_s: float = Field(
        15.0,
        ge=0,
        le=3600,
        alias="MINIO_METRICS_INTERVAL_S",
        description="seconds between two readings of MinIO's queue by the indexer role "
        "(MinIO caches them 10 s); 0: never read (no minio_queue in /status, no triggers "
        "of the automatic reconcile from MinIO)",
    )
    minio_queue_degraded_length: int = Field(
        1000,
        ge=0,
        alias="MINIO_QUEUE_DEGRADED_LENGTH",
        description="/status is degraded while MinIO holds more undelivered events than this "
        "for the notify target (it names the number); readiness is not affected",
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka brokers, host:port separated by commas",
    )
    kafka_events_topic: str = Field(
        "minio-events",
        alias="KAFKA_EVENTS_TOPIC",
        description="the topic MinIO publishes bucket notifications to",
    )
    kafka_dlq_topic: str = Field(
        "minio-events-dlq",
        alias="KAFKA_DLQ_TOPIC",
        description="the dead-letter topic: poison messages and jobs out of retries",
    )
    kafka_group_id: str = Field(
        "indexer", alias="KAFKA_GROUP_ID", description="consumer group of the indexer"
    )
    kafka_events_partitions: int = Field(
        4,
        ge=1,
        le=1000,
        alias="KAFKA_EVENTS_PARTITIONS",
        description="partitions of the events topic setup creates: the most processes of "
        "one role that share the work",
    )
    kafka_replication_factor: int = Field(
        1,
        ge=1,
        le=7,
        alias="KAFKA_REPLICATION_FACTOR",
        description="replication factor of the topics setup creates",
    )
    # Encryption and authentication of every Kafka client (consumer/kafka/clients.py). The
    # SASL credentials are used only with a SASL_* protocol, the TLS files only with *SSL.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        alias="KAFKA_SECURITY_PROTOCOL",
        description="for every Kafka client of the package (consumers, producers, admin)",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", alias="KAFKA_SASL_MECHANISM", description="with a SASL_* protocol"
    )
    kafka_sasl_username: str = Field(
        "",
        alias="KAFKA_SASL_USERNAME",
        description="SASL user, required with a SASL_* protocol, ignored otherwise",
    )
    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), alias="KAFKA_SASL_PASSWORD", description="its password"
    )
    kafka_ssl_cafile: Path | None = Field(
        None,
        alias="KAFKA_SSL_CAFILE",
        description="PEM CA bundle the broker's certificate is verified against, with SSL "
        "or SASL_SSL (unset: the system's CAs)",
    )
    kafka_ssl_certfile: Path | None = Field(
        None,
        alias="KAFKA_SSL_CERTFILE",
        description="client certificate, for brokers that require mutual TLS",
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, alias="KAFKA_SSL_KEYFILE", description="the client certificate's key"
    )

    # --- Service ---------------------------------------------------------------------
    health_host: str = Field(
        "127.0.0.1",
        alias="HEALTH_HOST",
        description="address of run's /healthz /readyz /status /metrics server; status asks it",
    )
    health_port: int = Field(
        8080,
        ge=0,
        le=65535,
        alias="HEALTH_PORT",
        description="its port (0: any free port, logged)",
    )
    health_cache_s: float = Field(
        2.0,
        ge=0,
        le=60,
        alias="HEALTH_CACHE_S",
        description="/readyz and /status answer from checks at most this old (0: every "
        "request checks); requests that arrive while a round of checks runs wait for it",
    )
    log_level: str = Field(
        "info",
        alias="LOG_LEVEL",
        description="debug, info, warning, error or critical (anything else: exit 2). Verbs "
        "other than run log warnings only unless it is set",
    )

    # --- Indexer ---------------------------------------------------------------------
    indexer_batch_max_records: int = Field(
        2000,
        ge=1,
        le=100_000,
        alias="INDEXER_BATCH_MAX_RECORDS",
        description="messages per batch: one index transaction",
    )
    indexer_max_message_bytes: int = Field(
        1_048_576,
        ge=1024,
        alias="INDEXER_MAX_MESSAGE_BYTES",
        description="larger messages go to the DLQ",
    )
    # Unset: MINIO_HEALTH_CHECK_INTERVAL, the seed documents' name for the periodic check,
    # so deployments that set it keep their interval.
    index_storage_count_interval_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        alias="INDEX_STORAGE_COUNT_INTERVAL_S",
        description="seconds between two counts of objects and bytes per bucket from the "
        "index, for the index_objects and index_size_bytes metrics (unset: "
        "MINIO_HEALTH_CHECK_INTERVAL)",
    )
    shutdown_grace_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        alias="SHUTDOWN_GRACE_S",
        description="how long a stop may take to drain the batch and jobs in flight",
    )
    index_journal_retention_days: int = Field(
        90,
        ge=0,
        alias="INDEX_JOURNAL_RETENTION_DAYS",
        description="journal entries older than this are pruned, hourly (0: kept forever)",
    )

    # --- Index -------------------------------------------------------------------------
    index_url: str = Field(
        "sqlite:///voxpersona-index.sqlite3",
        alias="INDEX_URL",
        description="the index: a SQLite path or URL (sqlite:////abs/path for an absolute "
        "one; relative to the working directory), or postgresql://...",
    )
    index_retry_backoff_s: float = Field(
        0.5,
        gt=0,
        le=60,
        alias="INDEX_RETRY_BACKOFF_S",
        description="first delay of the retries while the index (or Kafka at start) is "
        "unavailable: doubling, with jitter, capped at 30 s",
    )
    index_command_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        alias="INDEX_COMMAND_TIMEOUT_S",
        description="PostgreSQL: how long one statement (and a new connection, at most 10 s) "
        "may take, network included, before it fails and is retried: a stalled connection "
        "ends within this. Not used by SQLite",
    )
    index_writer_process: bool = Field(
        True,
        alias="INDEX_WRITER_PROCESS",
        description="the indexer's batch writes (run, replay) in a process of their own, "
        "with a core and a GIL of their own while the indexer decodes the next batch: "
        "1.3-1.4x the events per second for ~100 MB more memory (false: in a thread of "
        "the indexer's process)",
    )

    # --- Processing (role "processor") ---------------------------------------------------
    kafka_processor_group_id: str = Field(
        "processor",
        alias="KAFKA_PROCESSOR_GROUP_ID",
        description="consumer group of the processing workers",
    )
    kafka_results_group_id: str = Field(
        "bot-results",
        alias="KAFKA_RESULTS_GROUP_ID",
        description="consumer group of the bot's feed of finished results, VoxClient.processed()",
    )
    processing_concurrency: int = Field(
        4, ge=1, le=256, alias="PROCESSING_CONCURRENCY", description="jobs run at once per process"
    )
    # Unset: INDEXER_MAX_MESSAGE_BYTES, so both roles of one deployment agree on what is
    # too large unless told otherwise.
    processing_max_message_bytes: int | None = Field(
        None,
        ge=1024,
        alias="PROCESSING_MAX_MESSAGE_BYTES",
        description="larger messages are malformed for the processor (dead-lettered where "
        "it owns malformed messages); unset: INDEXER_MAX_MESSAGE_BYTES",
    )
    processing_timeout_s: float = Field(
        600.0,
        gt=0,
        le=86_400,
        alias="PROCESSING_TIMEOUT_S",
        description="time limit of one attempt of one job",
    )
    # Shorter: faster takeover; longer: more tolerance for an index that stalls renewals.
    processing_lease_s: float = Field(
        120.0,
        ge=2,
        le=86_400,
        alias="PROCESSING_LEASE_S",
        description="a running job's lease, renewed every quarter of it while the job runs "
        "(so a job of any length keeps it); another processor takes a job over only this "
        "long after its runner died",
    )
    processing_dead_letter_malformed: bool | None = Field(
        None,
        alias="PROCESSING_DEAD_LETTER_MALFORMED",
        description="whether the processor dead-letters malformed messages; unset: yes with "
        "run --role processor, no where an indexer runs in the same process (set it false "
        "where separate indexer processes read the same topic)",
    )
    processing_rules_file: Path | None = Field(
        None,
        alias="PROCESSING_RULES_FILE",
        description="JSON processing rules (infra/processing-rules.example.json); unset: "
        "audio files in MINIO_AUDIO_BUCKET_NAME go to audio-probe and transcribe",
    )
    transcribe_base_url: str | None = Field(
        None,
        alias="TRANSCRIBE_BASE_URL",
        description="an OpenAI-compatible API, e.g. https://api.openai.com/v1; unset: "
        "transcribe is off",
    )
    transcribe_api_key: SecretStr = Field(
        SecretStr(""), alias="TRANSCRIBE_API_KEY", description="its key"
    )
    transcribe_model: str = Field(
        "whisper-1", alias="TRANSCRIBE_MODEL", description="the transcription model"
    )
    transcribe_max_bytes: int = Field(
        25 * 1024**2,
        gt=0,
        alias="TRANSCRIBE_MAX_BYTES",
        description="the largest file sent for transcription",
    )
    transcribe_timeout_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        alias="TRANSCRIBE_TIMEOUT_S",
        description="time limit of one transcription request, upload and answer together "
        "(an answer trickling in a byte at a time ends there too)",
    )

    # --- Automatic reconcile (a task of the indexer role) -------------------------------
    reconcile_auto: bool = Field(
        True,
        alias="RECONCILE_AUTO",
        description="the indexer role reconciles the notification file's buckets by itself, "
        "with repair, when MinIO's failed-events count rises or MinIO restarted, and every "
        "RECONCILE_INTERVAL_S (see MinIO's delivery)",
    )
    reconcile_interval_s: float = Field(
        3600.0,
        ge=0,
        le=30 * 86_400,
        alias="RECONCILE_INTERVAL_S",
        description="seconds between two anti-entropy runs of the group (0: none; MinIO's "
        "triggers still start runs)",
    )
    reconcile_settle_s: float = Field(
        30.0,
        ge=0,
        le=3600,
        alias="RECONCILE_SETTLE_S",
        description="objects written this recently are left to their events, still on their "
        "way; a triggered run waits this long after the latest trigger (keep it above "
        "MinIO's 10 s metrics cache plus its 3 s send loop)",
    )
    reconcile_min_gap_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        alias="RECONCILE_MIN_GAP_S",
        description="at most one automatic run per this many seconds in the group (from the "
        "end of one to the start of the next)",
    )
    reconcile_max_lag: int = Field(
        1000,
        ge=0,
        alias="RECONCILE_MAX_LAG",
        description="no automatic run while the indexer's group is more events than this "
        "behind (the index is catching up: objects would look missing)",
    )
    reconcile_lease_s: float = Field(
        300.0,
        ge=10,
        le=86_400,
        alias="RECONCILE_LEASE_S",
        description="the run's lease in the index, renewed while it runs: one run at a time "
        "across the group; a dead runner's run is taken over this long after",
    )

    # --- Retention (role "retention"; lifecycle rules by setup) ---------------------------
    retention_policies_file: Path | None = Field(
        None,
        alias="RETENTION_POLICIES_FILE",
        description="JSON retention policies (infra/retention-policies.example.json); unset: "
        "one policy, cleanup, of MINIO_BUCKET_NAME after MINIO_CLEANUP_DAYS",
    )
    retention_sweep_interval_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86_400,
        alias="RETENTION_SWEEP_INTERVAL_S",
        description="seconds between two sweeps of the retention role",
    )
    retention_batch_size: int = Field(
        500,
        ge=1,
        le=1000,
        alias="RETENTION_BATCH_SIZE",
        description="objects per multi-object delete request (S3 allows at most 1000)",
    )
    retention_delete_rate: float = Field(
        50.0,
        gt=0,
        le=10_000,
        alias="RETENTION_DELETE_RATE",
        description="deletions per second, at most: a sweep never floods MinIO or the events topic",
    )
    retention_max_lag: int = Field(
        1000,
        ge=0,
        alias="RETENTION_MAX_LAG",
        description="the sweeper deletes nothing while the indexer's group is more events "
        "than this behind the events topic: the index could be stale",
    )

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
