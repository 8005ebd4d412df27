"""Least-privilege identities, the pure parts: rendering the policy templates of
infra/minio/policies, comparing policies, the secrets file's lines, and the checks on the
settings. The admin calls are tested against the real MinIO in
tests/integration/test_identities.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from consumer.errors import ConfigError, SetupFailed
from consumer.retention.policy import RetentionPolicy
from consumer.settings import Settings
from consumer.setup.identities import (
    IdentityOptions,
    IdentitySpec,
    canonical_policy,
    check_specs,
    identity_specs,
    merge_env_lines,
    objects_arn,
    render_policy,
    sweep_resources,
    watched_buckets,
    write_secrets_file,
)
from tests.test_cli import run_cli

BUCKETS = {
    "MINIO_AUDIO_BUCKET_NAME": "audio-b",
    "MINIO_BUCKET_NAME": "storage-b",
    "MINIO_RESULTS_BUCKET_NAME": "results-b",
}
SCRATCH = RetentionPolicy(name="scratch", bucket="audio-b", prefix="tmp/", seconds=60)
INTERVIEWS = RetentionPolicy(
    name="interviews", bucket="storage-b", days=30, metadata={"session-type": "interview"}
)
LIFECYCLE = RetentionPolicy(name="cleanup", bucket="storage-b", days=30)


def _settings(**more: object) -> Settings:
    values: dict[str, object] = {"MINIO_ACCESS_KEY": "root-key", **BUCKETS, **more}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _specs(*policies: RetentionPolicy, **more: object) -> dict[str, IdentitySpec]:
    settings = _settings(**more)
    specs = identity_specs(settings, IdentityOptions(), watched_buckets(settings), policies)
    return {spec.role: spec for spec in specs}


def _grants(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (action, resource) pair the policy allows."""
    pairs = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        # An admin action's statement has no resource (MinIO ignores it there).
        for action in statement["Action"]:
            for resource in statement.get("Resource", ["(admin)"]):
                pairs.add((action, resource))
    return pairs


def test_the_uploader_may_only_put_into_the_audio_bucket() -> None:
    uploader = _specs(SCRATCH, INTERVIEWS)["uploader"]
    assert uploader.policy_name == "voxpersona-uploader"
    assert _grants(uploader.policy) == {
        ("s3:PutObject", "arn:aws:s3:::audio-b/*"),
        ("s3:AbortMultipartUpload", "arn:aws:s3:::audio-b/*"),
        ("s3:ListMultipartUploadParts", "arn:aws:s3:::audio-b/*"),
    }


def test_the_consumer_deletes_only_where_a_sweeper_policy_says() -> None:
    consumer = _specs(SCRATCH, INTERVIEWS, LIFECYCLE)["consumer"]
    deletes = {
        (action, resource)
        for action, resource in _grants(consumer.policy)
        if action.startswith("s3:Delete")
    }
    # The lifecycle policy "cleanup" is MinIO's scanner's to enforce: no grant for it.
    assert deletes == {
        (action, resource)
        for action in ("s3:DeleteObject", "s3:DeleteObjectVersion")
        for resource in ("arn:aws:s3:::audio-b/tmp/*", "arn:aws:s3:::storage-b/*")
    }
    assert ("s3:PutObject", "arn:aws:s3:::results-b/*") in _grants(consumer.policy)
    puts = {resource for action, resource in _grants(consumer.policy) if action == "s3:PutObject"}
    assert puts == {"arn:aws:s3:::results-b/*"}


def test_without_sweeper_policies_the_consumer_has_no_delete_statement() -> None:
    consumer = _specs(LIFECYCLE)["consumer"]
    actions = {action for action, _ in _grants(consumer.policy)}
    assert not any(action.startswith("s3:Delete") for action in actions)
    assert [s["Sid"] for s in consumer.policy["Statement"]] == [
        "ReadWatchedBuckets",
        "ReadWatchedObjects",
        "WriteProcessingResults",
        "ReadNotifyQueueMetrics",
    ]
    reads = {r for a, r in _grants(consumer.policy) if a == "s3:GetObject"}
    assert reads == {f"arn:aws:s3:::{b}/*" for b in ("audio-b", "storage-b", "results-b")}
    assert "$comment" not in consumer.policy


def test_the_consumer_may_read_minios_metrics_and_no_other_admin_action() -> None:
    # MinIO's /minio/v2/metrics/* asks the token's key for admin:Prometheus: the notify
    # target's queue is read from there.
    consumer = _specs(SCRATCH)["consumer"]
    admin = {pair for pair in _grants(consumer.policy) if pair[0].startswith("admin:")}
    assert admin == {("admin:Prometheus", "(admin)")}


def test_watched_buckets_are_the_managed_ones_then_the_others_once() -> None:
    settings = _settings()
    watched = watched_buckets(settings, ["extra", "audio-b"], ["rules-b"], ["extra"])
    assert watched == ("audio-b", "storage-b", "results-b", "extra", "rules-b")


def test_render_expands_lists_substitutes_settings_and_drops_empty_statements() -> None:
    template = {
        "$comment": "dropped",
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["${LIST}", "x"]},
            {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["a:${B}/*"]},
            {"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": ["${EMPTY}"]},
        ],
    }
    rendered = render_policy(template, {"B": "bkt"}, {"LIST": ("l1", "l2"), "EMPTY": ()})
    assert rendered == {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["l1", "l2", "x"]},
            {"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": ["a:bkt/*"]},
        ],
    }


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ({"Statement": [{"Resource": ["${NOPE}"]}]}, "unknown placeholder ${NOPE}"),
        # A list placeholder is a whole array element, never part of a string.
        ({"Statement": [{"Resource": ["x${LIST}"]}]}, "unknown placeholder ${LIST}"),
        ({"Statement": [{"Resource": ["${EMPTY}"]}]}, "without a resource"),
        ({"Version": "2012-10-17"}, "no Statement list"),
    ],
)
def test_render_refuses_what_it_cannot_express(template: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=r"^t\.json: ") as caught:
        render_policy(template, {}, {"LIST": ("a",), "EMPTY": ()}, "t.json")
    assert fragment in str(caught.value)


@pytest.mark.parametrize("prefix", ["a*", "what?", "${aws:username}/"])
def test_a_prefix_iam_reads_as_a_pattern_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigError, match="literally"):
        objects_arn("bucket", prefix)
    policy = RetentionPolicy(name="p", bucket="bucket", prefix=prefix, seconds=1)
    with pytest.raises(ConfigError):
        sweep_resources([policy])


def test_sweep_resources_name_each_bucket_and_prefix_once() -> None:
    twin = RetentionPolicy(name="twin", bucket="audio-b", prefix="tmp/", seconds=5)
    assert sweep_resources([SCRATCH, twin, LIFECYCLE]) == ("arn:aws:s3:::audio-b/tmp/*",)


def test_canonical_policy_ignores_minio_reordering() -> None:
    ours = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "A", "Effect": "Allow", "Action": ["s3:Put", "s3:Abort"], "Resource": ["r"]},
            {"Sid": "B", "Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["q", "p"]},
        ],
    }  # fmt: skip
    theirs = {
        "Statement": [
            {"Effect": "Allow", "Sid": "B", "Action": "s3:GetObject", "Resource": ["p", "q"]},
            {"Sid": "A", "Effect": "Allow", "Action": ["s3:Abort", "s3:Put"], "Resource": "r"},
        ],
        "Version": "2012-10-17",
    }  # fmt: skip
    assert canonical_policy(ours) == canonical_policy(theirs)
    broader = json.loads(json.dumps(theirs))
    broader["Statement"][0]["Action"] = "s3:*"
    assert canonical_policy(ours) != canonical_policy(broader)


def test_merge_env_lines_replaces_in_place_and_keeps_the_rest() -> None:
    existing = "# keys\nOTHER=1\nMINIO_UPLOADER_SECRET_KEY=old\nMINIO_UPLOADER_SECRET_KEY=dup\n"
    merged = merge_env_lines(
        existing, {"MINIO_UPLOADER_SECRET_KEY": "new", "MINIO_UPLOADER_ACCESS_KEY": "up"}
    )
    assert merged == (
        "# keys\nOTHER=1\nMINIO_UPLOADER_SECRET_KEY=new\nMINIO_UPLOADER_ACCESS_KEY=up\n"
    )
    assert merge_env_lines("", {"A": "1"}) == "A=1\n"


def test_the_secrets_file_is_owner_only_and_keeps_other_lines(tmp_path: Path) -> None:
    path = tmp_path / "identities.env"
    path.write_text("KEEP=me\nA=old\n")
    path.chmod(0o644)
    write_secrets_file(path, {"A": "new"})
    assert path.read_text() == "KEEP=me\nA=new\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["identities.env"]  # no temporary left
    with pytest.raises(SetupFailed, match="cannot write the secrets file"):
        write_secrets_file(tmp_path / "missing-dir" / "x.env", {"A": "1"})


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"MINIO_UPLOADER_ACCESS_KEY": "voxpersona-consumer"}, "must differ"),
        ({"MINIO_CONSUMER_ACCESS_KEY": "root-key"}, "MINIO_CONSUMER_ACCESS_KEY is the root"),
        ({"MINIO_UPLOADER_SECRET_KEY": "short"}, "MINIO_UPLOADER_SECRET_KEY must be at least"),
    ],
)
def test_identity_settings_are_checked(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        _specs(**settings)


def test_secrets_stay_out_of_reprs_and_are_scrubbed_from_logs() -> None:
    secret = "s3cr3t-" + os.urandom(8).hex()
    settings = _settings(MINIO_CONSUMER_SECRET_KEY=secret, MINIO_UPLOADER_SECRET_KEY=secret + "u")
    specs = identity_specs(settings, IdentityOptions(), watched_buckets(settings), ())
    assert all(secret not in repr(spec) for spec in specs)
    assert secret not in repr(settings)
    assert {secret, secret + "u"} <= set(settings.secret_values)
    assert {spec.secret_key for spec in specs} == {secret, secret + "u"}
    check_specs(specs, "root-key")  # valid as given


def test_policy_names_follow_the_prefix(tmp_path: Path) -> None:
    settings = _settings(MINIO_IDENTITY_POLICY_PREFIX="staging")
    names = [s.policy_name for s in identity_specs(settings, IdentityOptions(), ("audio-b",), ())]
    assert names == ["staging-consumer", "staging-uploader"]
    missing = IdentityOptions(templates_dir=tmp_path)
    with pytest.raises(ConfigError, match="cannot read policy template"):
        identity_specs(settings, missing, ("audio-b",), ())


def test_secrets_file_without_identities_is_a_usage_error() -> None:
    result = run_cli("setup", "--secrets-file", "/tmp/x.env")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "consumer: error: --secrets-file is only meaningful with --identities"
    ]
