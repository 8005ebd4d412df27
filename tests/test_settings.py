"""Settings: the contract's env names, defaults of the seed documents, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.settings import Settings

CONTRACT_NAMES = {
    "MINIO_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "MINIO_USE_SSL", "MINIO_CERT_PATH",
    "MINIO_BUCKET_NAME", "MINIO_AUDIO_BUCKET_NAME", "MINIO_RESULTS_BUCKET_NAME",
    "MINIO_MAX_RETRIES", "MINIO_RETRY_BACKOFF", "MINIO_MAX_FILE_SIZE", "MINIO_CLEANUP_DAYS",
    "MINIO_HEALTH_CHECK_INTERVAL", "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_EVENTS_TOPIC",
    "KAFKA_DLQ_TOPIC", "KAFKA_GROUP_ID", "INDEX_URL",
}  # fmt: skip


def test_every_contract_name_is_a_setting() -> None:
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert aliases >= CONTRACT_NAMES


def test_defaults_follow_the_seed_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONTRACT_NAMES:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.minio_bucket_name == "voxpersona-storage"
    assert settings.minio_audio_bucket_name == "voxpersona-audio"
    assert settings.minio_results_bucket_name == "processed-results"
    assert settings.minio_max_file_size == 2 * 1024**3
    assert settings.minio_cleanup_days == 30
    assert settings.index_url.startswith("sqlite:")


def test_read_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_ENDPOINT", "http://minio.local:9000/")
    monkeypatch.setenv("MINIO_USE_SSL", "true")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", " a:1, ,b:2 ")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.minio_endpoint == "minio.local:9000"
    assert settings.minio_use_ssl is True
    assert settings.kafka_bootstrap_servers == "a:1,b:2"


def test_secret_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINIO_SECRET_KEY", "very-secret-value-123")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "very-secret-value-123" not in repr(settings)
    assert "very-secret-value-123" not in str(settings.model_dump())
    assert settings.minio_secret_key.get_secret_value() == "very-secret-value-123"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MINIO_MAX_RETRIES", "-1"),
        ("MINIO_RETRY_BACKOFF", "0"),
        ("MINIO_ENDPOINT", "host:9000/path"),
        ("KAFKA_BOOTSTRAP_SERVERS", " , "),
        ("MINIO_USE_SSL", "maybe"),
    ],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_component_knobs_default_to_the_values_they_replace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The storage count interval and the processor's message limit are settings of their
    own; unset, each keeps the value of the knob it used to borrow."""
    for name in (
        "INDEX_STORAGE_COUNT_INTERVAL_S",
        "PROCESSING_MAX_MESSAGE_BYTES",
        "MINIO_HEALTH_CHECK_INTERVAL",
        "INDEXER_MAX_MESSAGE_BYTES",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.storage_count_interval_s == 60.0
    assert defaults.processing_message_bytes == 1_048_576

    monkeypatch.setenv("MINIO_HEALTH_CHECK_INTERVAL", "7")
    monkeypatch.setenv("INDEXER_MAX_MESSAGE_BYTES", "65536")
    inherited = Settings(_env_file=None)  # type: ignore[call-arg]
    assert inherited.storage_count_interval_s == 7.0
    assert inherited.processing_message_bytes == 65536

    monkeypatch.setenv("INDEX_STORAGE_COUNT_INTERVAL_S", "2.5")
    monkeypatch.setenv("PROCESSING_MAX_MESSAGE_BYTES", "4096")
    own = Settings(_env_file=None)  # type: ignore[call-arg]
    assert own.storage_count_interval_s == 2.5
    assert own.processing_message_bytes == 4096
    assert own.minio_health_check_interval == 7.0
    assert own.indexer_max_message_bytes == 65536


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INDEX_STORAGE_COUNT_INTERVAL_S", "0"),
        ("INDEX_STORAGE_COUNT_INTERVAL_S", "100000"),
        ("INDEX_STORAGE_COUNT_INTERVAL_S", "soon"),
        ("PROCESSING_MAX_MESSAGE_BYTES", "1023"),
        ("PROCESSING_MAX_MESSAGE_BYTES", "big"),
        ("HEALTH_CACHE_S", "-1"),
        ("HEALTH_CACHE_S", "61"),
    ],
)
def test_component_knobs_are_validated(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_default_notify_config_is_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found through the package, not the checkout's layout: consumer/minio-notify.json is
    what an installed wheel carries, and it is the repository's file."""
    from importlib.resources import files

    from consumer.settings import DEFAULT_NOTIFY_CONFIG
    from consumer.setup.notify_config import load_notify_config

    monkeypatch.delenv("MINIO_NOTIFY_CONFIG", raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.minio_notify_config == DEFAULT_NOTIFY_CONFIG
    packaged = files("consumer").joinpath("minio-notify.json")
    assert DEFAULT_NOTIFY_CONFIG.read_bytes() == packaged.read_bytes()
    repo_file = Path(__file__).resolve().parent.parent / "minio-notify.json"
    assert DEFAULT_NOTIFY_CONFIG.read_bytes() == repo_file.read_bytes()
    config = load_notify_config(DEFAULT_NOTIFY_CONFIG, settings)
    assert {entry.bucket for entry in config.buckets} == set(settings.managed_buckets)
