"""An object's story (consumer/client/history.py) built from journal and jobs rows,
without any server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from consumer.client.history import build_history, job_summary, version_label
from consumer.events import RECONCILE_GONE, RETENTION_AGENT_PRODUCT, EventKind
from consumer.index import JobRecord, JobStatus, JournalRecord, KafkaPosition
from consumer.retention.policy import RetentionPolicy

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
BUCKET, KEY = "voxpersona-audio", "user_5/note.ogg"
FROM_KAFKA = KafkaPosition("minio-events", 2, 40)


def journal(
    id: int,
    minutes: int,
    event_name: str,
    kind: EventKind,
    *,
    version_id: str = "",
    user_agent: str | None = "MinIO (linux) minio-py/7.2",
    kafka: KafkaPosition | None = FROM_KAFKA,
) -> JournalRecord:
    return JournalRecord(
        id=id,
        bucket=BUCKET,
        key=KEY,
        version_id=version_id,
        event_name=event_name,
        kind=kind,
        event_time=T0 + timedelta(minutes=minutes),
        sequencer=f"{id:016X}",
        principal_id="bot",
        source_ip="10.0.0.7",
        user_agent=user_agent,
        request_id=f"req-{id}",
        size=1234,
        etag="abc",
        kafka=kafka,
        recorded_at=T0 + timedelta(minutes=minutes, seconds=1),
    )


def job(processor: str, minutes: int, status: JobStatus, *, version_id: str = "") -> JobRecord:
    failed = status is JobStatus.FAILED
    return JobRecord(
        bucket=BUCKET,
        key=KEY,
        version_id=version_id,
        processor=processor,
        sequencer="0001",
        etag="abc",
        status=status,
        attempts=3 if failed else 1,
        last_error="HTTP 503 from the transcription API" if failed else None,
        result_bucket=None if failed else "processed-results",
        result_key=None if failed else f"{KEY}/{processor}.json",
        created_at=T0 + timedelta(minutes=minutes),
        started_at=T0 + timedelta(minutes=minutes, seconds=1),
        finished_at=T0 + timedelta(minutes=minutes, seconds=3),
        duration_ms=2000,
        updated_at=T0 + timedelta(minutes=minutes, seconds=3),
    )


POLICIES = (
    RetentionPolicy(name="scratch", bucket=BUCKET, prefix="user_5/", seconds=60),
    RetentionPolicy(name="elsewhere", bucket="other-bucket", days=3),
)


def test_the_story_is_oldest_first_with_who_when_and_where_from() -> None:
    rows = [
        journal(
            2,
            5,
            "s3:ObjectRemoved:Delete",
            EventKind.REMOVED,
            user_agent=f"MinIO (linux) {RETENTION_AGENT_PRODUCT}/scratch",
        ),
        journal(1, 0, "s3:ObjectCreated:Put", EventKind.CREATED),
    ]
    history = build_history(BUCKET, KEY, rows, [job("audio-probe", 1, JobStatus.DONE)], POLICIES)
    story = history.rows()
    assert [(row["source"], row["what"]) for row in story] == [
        ("journal", "s3:ObjectCreated:Put"),
        ("job", "audio-probe done (1 attempt, 2000 ms)"),
        ("journal", "s3:ObjectRemoved:Delete"),
        ("retention", "removed by the retention sweeper (policy scratch)"),
    ]
    created = story[0]
    assert created["who"] == "bot from 10.0.0.7 (MinIO (linux) minio-py/7.2)"
    assert created["origin"] == "minio-events/2@40"
    assert created["kafka"] == {"topic": "minio-events", "partition": 2, "offset": 40}
    assert story[1]["result"] == f"processed-results/{KEY}/audio-probe.json"
    assert history.policies == (
        "scratch: voxpersona-audio/user_5/* older than 60 s (enforced by sweeper)",
    )


def test_a_client_delete_and_a_repair_say_so() -> None:
    rows = [
        journal(1, 0, "s3:ObjectCreated:Put", EventKind.CREATED),
        journal(2, 1, RECONCILE_GONE, EventKind.RECONCILED, kafka=None),
        journal(3, 2, "s3:ObjectRemoved:Delete", EventKind.REMOVED),
    ]
    story = build_history(BUCKET, KEY, rows, [], ()).rows()
    assert story[1]["origin"] == "repair (reconcile: gone from it)"
    assert "kafka" not in story[1]
    assert story[3]["what"] == "removed by a client"
    assert story[3]["actor"] == "client"


def test_versions_are_shown_as_versions_and_can_be_asked_for_alone() -> None:
    rows = [
        journal(1, 0, "s3:ObjectCreated:Put", EventKind.CREATED, version_id="aaa"),
        journal(2, 3, "s3:ObjectCreated:Put", EventKind.CREATED, version_id="bbb"),
    ]
    jobs = [job("transcribe", 4, JobStatus.FAILED, version_id="bbb")]
    history = build_history(BUCKET, KEY, rows, jobs, ())
    assert history.versions == ("aaa", "bbb")
    assert [row["version"] for row in history.rows()] == ["v1", "v2", "v2"]
    only_second = build_history(BUCKET, KEY, rows, jobs, (), version_id="bbb").rows()
    assert [row["what"] for row in only_second] == [
        "s3:ObjectCreated:Put",
        "transcribe failed (3 attempts, 2000 ms): HTTP 503 from the transcription API",
    ]
    assert only_second[1]["attempts"] == 3
    assert only_second[1]["error"] == "HTTP 503 from the transcription API"


def test_labels_and_summaries() -> None:
    assert version_label("", ("",)) == "-"
    assert version_label("zzz", ("aaa",)) == "zzz"
    running = job("transcribe", 0, JobStatus.DONE)
    assert job_summary(running) == "transcribe done (1 attempt, 2000 ms)"
