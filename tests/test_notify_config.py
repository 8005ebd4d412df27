"""minio-notify.json: the shipped file is valid, and mistakes are reported in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consumer.errors import ConfigError
from consumer.settings import Settings
from consumer.setup.notify_config import load_notify_config, parse_notify_config

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def _valid() -> dict[str, Any]:
    return {
        "target": {"id": "T1", "arn": "arn:minio:sqs::T1:kafka"},
        "buckets": [
            {
                "bucket": "${MINIO_AUDIO_BUCKET_NAME}",
                "rules": [{"id": "r", "events": ["s3:ObjectCreated:*"], "suffix": ".ogg"}],
            }
        ],
    }


def test_shipped_file_covers_the_three_buckets(settings: Settings) -> None:
    config = load_notify_config(REPO_ROOT / "minio-notify.json", settings)
    assert {entry.bucket for entry in config.buckets} == set(settings.managed_buckets)
    assert config.target.arn == f"arn:minio:sqs::{config.target.id}:kafka"
    for bucket in (settings.minio_audio_bucket_name, settings.minio_bucket_name):
        events = {event for rule in config.for_bucket(bucket) for event in rule.events}
        assert events == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}


def test_shipped_target_id_matches_the_local_stack() -> None:
    from infra.stack import NOTIFY_TARGET_ID

    raw = json.loads((REPO_ROOT / "minio-notify.json").read_text())
    assert raw["target"]["id"] == NOTIFY_TARGET_ID


def test_placeholders_follow_the_settings() -> None:
    renamed = Settings(_env_file=None, MINIO_AUDIO_BUCKET_NAME="other-audio")  # type: ignore[call-arg]
    config = parse_notify_config(_valid(), renamed)
    assert config.buckets[0].bucket == "other-audio"
    assert config.for_bucket("other-audio")[0].suffix == ".ogg"
    assert config.for_bucket("missing") == ()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["target"].update(arn="arn:minio:sqs::OTHER:kafka"), "names id 'OTHER'"),
        (lambda d: d["target"].update(arn="arn:aws:sns::T1:topic"), "is not of the form"),
        (lambda d: d["buckets"][0]["rules"][0].update(events=["ObjectCreated"]), "unknown S3"),
        (lambda d: d["buckets"][0]["rules"][0].update(events=[]), "rules.0.events"),
        (lambda d: d["buckets"][0].update(bucket="${NO_SUCH_SETTING}"), "unknown setting"),
        (lambda d: d["buckets"].append(dict(d["buckets"][0])), "bucket listed twice"),
        (lambda d: d.update(extra=1), "extra"),
    ],
)
def test_mistakes_are_one_clear_line(mutate: Any, message: str, settings: Settings) -> None:
    data = _valid()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_notify_config(data, settings)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_unreadable_files(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_notify_config(tmp_path / "missing.json", settings)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_notify_config(broken, settings)
    array = tmp_path / "array.json"
    array.write_text("[]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_notify_config(array, settings)
