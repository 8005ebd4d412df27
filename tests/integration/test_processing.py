"""Processing against the real stack: MinIO → Kafka → the processor group → results.

Real audio files are generated per test (tests/audio.py), uploaded to a bucket wired to
the events topic, and processed by a ProcessorWorker in its own consumer group. Results
are read back from the results bucket; statuses from the index.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from minio import Minio
from minio.commonconfig import Tags

from consumer.errors import ProcessingRetriable
from consumer.index import JobRecord, JobStatus, ObjectQuery, open_index
from consumer.indexer import Indexer
from consumer.processing.base import Job, Processor, SourceObject
from consumer.processing.probe import AudioProbe
from consumer.processing.rules import Rule
from consumer.processing.transcribe import Transcriber
from consumer.processing.worker import ProcessorWorker, result_key
from consumer.settings import Settings
from tests import audio
from tests.conftest import StackEndpoints, unique_name
from tests.helpers import Published, count_rows
from tests.integration.test_cli_e2e import REPO_ROOT, cli_env, run_cli
from tests.transcription_server import StandIn

pytestmark = pytest.mark.integration


def _put(minio: Minio, bucket: str, key: str, body: bytes, content_type: str) -> None:
    minio.put_object(bucket, key, io.BytesIO(body), len(body), content_type=content_type)


def _settings(
    stack: StackEndpoints, tmp_path: Path, bucket: str, results: str, **more: object
) -> Settings:
    values: dict[str, object] = {
        "INDEX_URL": f"sqlite:///{tmp_path / 'index.sqlite3'}",
        "MINIO_AUDIO_BUCKET_NAME": bucket,
        "MINIO_RESULTS_BUCKET_NAME": results,
        "MINIO_RETRY_BACKOFF": 0.05,
        "MINIO_MAX_RETRIES": 2,
    }
    return stack.settings(**(values | more))


async def _process(
    settings: Settings, processors: Mapping[str, Processor], **options: Any
) -> dict[str, JobRecord]:
    """One burst of a fresh (or given) processor group; the jobs by "key processor"."""
    async with open_index(settings.index_url) as store:
        worker = ProcessorWorker(
            settings,
            store,
            processors,
            group_id=options.pop("group_id", unique_name("p")),
            **options,
        )
        await asyncio.wait_for(worker.run(burst=True), timeout=120)
        jobs = await store.jobs(bucket=settings.minio_audio_bucket_name)
    return {f"{job.key} {job.processor}": job for job in jobs}


def _result(minio: Minio, bucket: str, key: str) -> dict[str, Any]:
    response = minio.get_object(bucket, key)
    try:
        return json.loads(response.read())
    finally:
        response.close()
        response.release_conn()


PROBED = {
    # key: (body, content type, expected facts)
    "user_1/voice.ogg": (
        lambda: audio.encoded("opus", 2.0),
        "audio/ogg",
        {"container": "ogg", "codec": "opus", "sample_rate": 48_000, "channels": 1},
    ),
    "user_1/talk.wav": (
        lambda: audio.wav(1.5, rate=16_000, channels=2),
        "audio/wav",
        {"container": "wav", "codec": "pcm", "sample_rate": 16_000, "channels": 2,
         "bits_per_sample": 16, "bitrate": 512_000},
    ),
    "user_2/song.mp3": (
        lambda: audio.encoded("mp3", 2.0),
        "audio/mpeg",
        {"container": "mp3", "codec": "mp3", "sample_rate": 44_100, "channels": 1},
    ),
    "user_2/lossless.flac": (
        lambda: audio.encoded("flac", 2.0),
        "audio/flac",
        {"container": "flac", "codec": "flac", "sample_rate": 44_100, "channels": 1},
    ),
    "user_3/memo.m4a": (
        lambda: audio.encoded("m4a", 2.0, channels=2),
        "audio/mp4",
        {"container": "mp4", "codec": "aac", "sample_rate": 44_100, "channels": 2},
    ),
}  # fmt: skip
BROKEN = {
    "user_4/corrupt.ogg": (os.urandom(4096), "audio/ogg", "not"),
    "user_4/empty.ogg": (b"", "audio/ogg", "empty object (0 bytes)"),
    "user_4/notes.ogg": (b"just some text, not audio\n" * 20, "text/plain", "not"),
}


async def test_every_format_is_probed_and_bad_files_fail_once(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket, results = make_bucket("audio"), make_bucket("res", notify_events=False)
    settings = _settings(stack, tmp_path, bucket, results)
    published = Published(stack)
    await published.mark()
    for key, (body, content_type, _) in PROBED.items():
        _put(minio, bucket, key, body(), content_type)
    for key, (body, content_type, _) in BROKEN.items():
        _put(minio, bucket, key, body, content_type)
    _put(minio, bucket, "user_5/readme.txt", b"not audio, not matched", "text/plain")
    await published.wait(bucket, len(PROBED) + len(BROKEN) + 1)

    jobs = await _process(settings, {"audio-probe": AudioProbe()})

    assert set(jobs) == {f"{key} audio-probe" for key in [*PROBED, *BROKEN]}
    for key, (_, _, facts) in PROBED.items():
        job = jobs[f"{key} audio-probe"]
        assert (job.status, job.attempts, job.last_error) == (JobStatus.DONE, 1, None), key
        assert (job.result_bucket, job.result_key) == (
            results,
            f"{bucket}/{key}/null/audio-probe.json",
        )
        stored = _result(minio, results, job.result_key)
        assert stored["source"]["key"] == key
        probe = stored["result"]
        assert {name: probe[name] for name in facts} == facts, key
        assert 1.4 < probe["duration_s"] < 2.2, key
        assert probe["bitrate"] > 0
        assert probe["size"] == stored["source"]["size"]
    for key, (_, _, reason) in BROKEN.items():
        job = jobs[f"{key} audio-probe"]
        assert job.status is JobStatus.FAILED, key
        assert job.attempts == 1, f"{key}: a permanent failure must not be retried"
        assert job.last_error is not None
        assert reason in job.last_error, job.last_error

    # Tagging a processed object, and replaying every event in a new group: nothing runs again.
    tags = Tags.new_object_tags()
    tags["reviewed"] = "yes"
    await published.mark()
    minio.set_object_tags(bucket, "user_1/talk.wav", tags)
    await published.wait(bucket, 1)
    again = await _process(settings, {"audio-probe": AudioProbe()})
    for name, job in again.items():
        assert (job.attempts, job.finished_at) == (jobs[name].attempts, jobs[name].finished_at)
    async with open_index(settings.index_url) as store:
        indexer = Indexer(settings, store, group_id=unique_name("i"))
        await asyncio.wait_for(indexer.run(burst=True), timeout=60)
        statuses = {
            r.key: r.processing_status for r in await store.list_objects(ObjectQuery(bucket=bucket))
        }
    assert statuses["user_1/talk.wav"] == "done"
    assert statuses["user_4/empty.ogg"] == "failed"


class _Flaky:
    """Fails with a transient error ``failures`` times per object, then succeeds."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}

    async def process(self, job: Job, source: SourceObject) -> Mapping[str, Any]:
        self.calls[job.key] = self.calls.get(job.key, 0) + 1
        if self.calls[job.key] <= self.failures:
            raise ProcessingRetriable(f"upstream busy (call {self.calls[job.key]})")
        return {"size": await source.size()}

    async def close(self) -> None:
        return None


async def test_transient_errors_are_retried_then_dead_lettered(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    make_topic: Callable[..., Any],
    tmp_path: Path,
) -> None:
    bucket, results = make_bucket("flaky"), make_bucket("res", notify_events=False)
    dlq = await make_topic("dlq")
    settings = _settings(stack, tmp_path, bucket, results, KAFKA_DLQ_TOPIC=dlq)
    published = Published(stack)
    await published.mark()
    _put(minio, bucket, "a.wav", audio.wav(0.1), "audio/wav")
    records = await published.wait(bucket, 1)
    rules = [Rule(bucket=bucket, processors=("flaky",))]

    recovering = _Flaky(failures=2)  # MINIO_MAX_RETRIES=2: the third attempt succeeds
    jobs = await _process(settings, {"flaky": recovering}, rules=rules)
    assert (jobs["a.wav flaky"].status, jobs["a.wav flaky"].attempts) == (JobStatus.DONE, 3)

    _put(minio, bucket, "b.wav", audio.wav(0.1), "audio/wav")
    await published.mark()
    records = await published.wait(bucket, 1)
    hopeless = _Flaky(failures=100)
    jobs = await _process(settings, {"flaky": hopeless}, rules=rules)
    failed = jobs["b.wav flaky"]
    assert (failed.status, failed.attempts) == (JobStatus.FAILED, 3)
    assert failed.last_error is not None
    assert "gave up after 3 attempts" in failed.last_error
    assert "upstream busy" in failed.last_error
    assert hopeless.calls == {"b.wav": 3}, "a.wav was done already and must not run again"

    letters = await _read_topic(stack.values["KAFKA_BOOTSTRAP_SERVERS"], dlq, 1)
    assert len(letters) == 1
    assert json.loads(letters[0].value)["Key"] == f"{bucket}/b.wav"
    headers = {name: value.decode() for name, value in letters[0].headers}
    assert headers["x-error-class"] == "flaky:RetriesExhausted"
    assert "upstream busy" in headers["x-error-reason"]
    assert int(headers["x-original-offset"]) == records[0].offset


class _Counting:
    """Counts its calls per object: what a paid API would bill."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def process(self, job: Job, source: SourceObject) -> Mapping[str, Any]:
        self.calls[job.key] += 1
        return {"size": await source.size()}

    async def close(self) -> None:
        return None


async def _announce_as_minio(
    stack: StackEndpoints, repair: dict[str, Any], *, nanoseconds: int
) -> str:
    """Publish the write ``repair`` (the reconcile's message) names as MinIO's own event
    of it: the same object and content, MinIO's event name and source, and its sequencer,
    the write's Last-Modified to the nanosecond where the repair has the millisecond.
    Returns that sequencer."""
    record = repair["Records"][0]
    sequencer = f"{int(record['s3']['object']['sequencer'], 16) + nanoseconds:X}"
    record = {
        **record,
        "eventName": "s3:ObjectCreated:Put",
        "eventSource": "minio:s3",
        "source": {"userAgent": "MinIO (linux; amd64) minio-go/v7.0.70"},
        "s3": {**record["s3"], "object": {**record["s3"]["object"], "sequencer": sequencer}},
    }
    message = {**repair, "EventName": "s3:ObjectCreated:Put", "Records": [record]}
    producer = AIOKafkaProducer(bootstrap_servers=stack.values["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        await producer.send_and_wait(
            stack.events_topic, json.dumps(message).encode(), key=repair["Key"].encode()
        )
    finally:
        await producer.stop()
    return sequencer


async def test_a_write_announced_by_the_reconcile_then_by_minio_is_processed_once(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    """MinIO dropped events (its queue was full) and the reconcile found this object and
    queued it, stamped with its Last-Modified in milliseconds; MinIO's own event of the
    same write, still in its queue, comes after, stamped in nanoseconds. Same bytes: one
    job, run once — the second announcement is no new content."""
    bucket = make_bucket("twice", notify_events=False)  # MinIO's own event: published below
    results = make_bucket("res", notify_events=False)
    settings = _settings(stack, tmp_path, bucket, results)
    _put(minio, bucket, "user_1/a.wav", audio.wav(0.1), "audio/wav")
    published = Published(stack)
    await published.mark()
    env = cli_env(stack, tmp_path, unique_name("g"))
    assert env["INDEX_URL"] == settings.index_url
    reconciled = run_cli(env, "reconcile", "--bucket", bucket, "--repair", "--json")
    assert reconciled.returncode == 0, reconciled.stderr
    (repair,) = await published.wait(bucket, 1)

    counting, group = _Counting(), unique_name("p")
    rules = [Rule(bucket=bucket, processors=("counting",))]
    await _process(settings, {"counting": counting}, rules=rules, group_id=group)
    assert counting.calls == {"user_1/a.wav": 1}
    await published.mark()
    announced = await _announce_as_minio(stack, repair.value, nanoseconds=654_321)
    await published.wait(bucket, 1)
    jobs = await _process(settings, {"counting": counting}, rules=rules, group_id=group)

    assert counting.calls == {"user_1/a.wav": 1}, "the same bytes were processed twice"
    job = jobs["user_1/a.wav counting"]
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)
    # The job is the repair's, the first announcement of the write.
    repaired_at = int(repair.value["Records"][0]["s3"]["object"]["sequencer"], 16)
    assert int(job.sequencer, 16) == repaired_at < int(announced, 16)


class _Slow:
    """Never finishes in time."""

    name = "slow"

    async def process(self, job: Job, source: SourceObject) -> Mapping[str, Any]:
        await asyncio.sleep(30)
        return {}

    async def close(self) -> None:
        return None


async def test_a_job_over_its_time_limit_is_retried_then_fails(
    stack: StackEndpoints,
    minio: Minio,
    make_bucket: Callable[..., str],
    make_topic: Callable[..., Any],
    tmp_path: Path,
) -> None:
    bucket, results = make_bucket("slow"), make_bucket("res", notify_events=False)
    dlq = await make_topic("dlq")
    settings = _settings(
        stack, tmp_path, bucket, results, KAFKA_DLQ_TOPIC=dlq, PROCESSING_TIMEOUT_S=0.3
    )
    published = Published(stack)
    await published.mark()
    _put(minio, bucket, "stuck.wav", audio.wav(0.1), "audio/wav")
    await published.wait(bucket, 1)
    rules = [Rule(bucket=bucket, processors=("slow",))]

    started = asyncio.get_running_loop().time()
    jobs = await _process(settings, {"slow": _Slow()}, rules=rules)
    assert asyncio.get_running_loop().time() - started < 20, "the time limit was not applied"
    job = jobs["stuck.wav slow"]
    assert (job.status, job.attempts) == (JobStatus.FAILED, 3)
    assert job.last_error is not None
    assert "timed out after 0.3 s" in job.last_error
    assert len(await _read_topic(stack.values["KAFKA_BOOTSTRAP_SERVERS"], dlq, 1)) == 1


async def test_transcription_through_the_stand_in_api_with_429_and_5xx(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    bucket, results = make_bucket("speech"), make_bucket("res", notify_events=False)
    api_key = os.urandom(16).hex()
    with StandIn() as api:
        settings = _settings(
            stack,
            tmp_path,
            bucket,
            results,
            MINIO_MAX_RETRIES=3,
            TRANSCRIBE_BASE_URL=api.base_url,
            TRANSCRIBE_API_KEY=api_key,
            TRANSCRIBE_MODEL="whisper-test",
        )
        api.script("ok.ogg", [(429, {"error": {"message": "slow down"}}), (503, "busy"),
                              (200, {"text": "привет, мир", "language": "ru"})])  # fmt: skip
        api.script("refused.ogg", [(400, {"error": {"message": "audio too short"}})])
        published = Published(stack)
        await published.mark()
        voice = audio.encoded("opus", 1.0)
        _put(minio, bucket, "user_9/ok.ogg", voice, "audio/ogg")
        _put(minio, bucket, "user_9/refused.ogg", voice, "audio/ogg")
        await published.wait(bucket, 2)

        jobs = await _process(settings, {"transcribe": Transcriber(settings, api.base_url)})

        ok, refused = jobs["user_9/ok.ogg transcribe"], jobs["user_9/refused.ogg transcribe"]
        assert (ok.status, ok.attempts) == (JobStatus.DONE, 3)
        assert ok.result_key is not None
        assert _result(minio, results, ok.result_key)["result"]["text"] == "привет, мир"
        assert (refused.status, refused.attempts) == (JobStatus.FAILED, 1)
        assert refused.last_error is not None
        assert "audio too short" in refused.last_error
        seen = api.requests
        assert [r.filename for r in seen].count("ok.ogg") == 3
        assert all(r.authorization == f"Bearer {api_key}" for r in seen)
        assert all(r.model == "whisper-test" for r in seen)
        assert all(r.audio == voice for r in seen)
        assert api_key not in repr(Transcriber(settings, api.base_url))


async def _read_topic(bootstrap: str, topic: str, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[Any] = []
    try:
        for _ in range(40):
            for messages in (await consumer.getmany(timeout_ms=250)).values():
                found.extend(messages)
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found


def test_result_keys_derive_from_the_source_object() -> None:
    from datetime import UTC, datetime

    from consumer.index import JobRequest

    request = JobRequest("audio", "user_1/a b.ogg", "v7", "audio-probe", "1", "e", 3)
    job = Job(request, "audio/ogg", "1", datetime(2026, 1, 1, tzinfo=UTC))
    assert result_key(job) == "audio/user_1/a b.ogg/v7/audio-probe.json"


def test_kill_9_during_processing_then_restart_gives_one_result_each(
    stack: StackEndpoints, minio: Minio, make_bucket: Callable[..., str], tmp_path: Path
) -> None:
    """The real process (`run --role processor`) killed mid-way: after a restart every
    object ends done, with exactly one result per processor, and `ls --status` shows it."""
    bucket, results = make_bucket("crash"), make_bucket("res", notify_events=False)
    files = 16
    published = Published(stack)
    asyncio.run(published.mark())
    for n in range(files):
        _put(minio, bucket, f"user_1/take {n:02}.wav", audio.wav(0.2 + n / 100), "audio/wav")
    asyncio.run(published.wait(bucket, files))
    index_url = f"sqlite:///{tmp_path / 'index.sqlite3'}"
    with StandIn(delay_s=0.4) as api:
        env = {
            **cli_env(stack, tmp_path, unique_name("g")),
            "MINIO_AUDIO_BUCKET_NAME": bucket,
            "MINIO_RESULTS_BUCKET_NAME": results,
            "TRANSCRIBE_BASE_URL": api.base_url,
            "PROCESSING_CONCURRENCY": "2",
            # The restarted process takes the killed one's jobs over once their leases
            # expired: short here, so the test does not wait the default two minutes.
            "PROCESSING_LEASE_S": "4",
        }
        run = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--role", "processor"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while _done_jobs(index_url, bucket) < 3:
                assert time.monotonic() < deadline, "nothing was processed"
                assert run.poll() is None, "run exited early"
                time.sleep(0.05)
            run.send_signal(signal.SIGKILL)
            run.wait(timeout=10)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(timeout=10)
        at_kill = _done_jobs(index_url, bucket)
        assert at_kill < 2 * files, f"the kill should land mid-way ({at_kill} jobs done)"
        restarted = run_cli(env, "run", "--role", "processor", "--burst", timeout_s=180)
        assert restarted.returncode == 0, restarted.stderr

    jobs = asyncio.run(_jobs(index_url, bucket))
    assert len(jobs) == 2 * files
    assert {job.status for job in jobs} == {JobStatus.DONE}
    stored = sorted(obj.object_name or "" for obj in minio.list_objects(results, recursive=True))
    expected = sorted(
        f"{bucket}/user_1/take {n:02}.wav/null/{processor}.json"
        for n in range(files)
        for processor in ("audio-probe", "transcribe")
    )
    assert stored == expected

    indexed = run_cli(env, "run", "--role", "indexer", "--burst", timeout_s=120)
    assert indexed.returncode == 0, indexed.stderr
    listed = run_cli(env, "ls", "--bucket", bucket, "--status", "done", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(rows) == files
    assert {row["processing_status"] for row in rows} == {"done"}


async def _jobs(index_url: str, bucket: str) -> list[JobRecord]:
    async with open_index(index_url) as store:
        return await store.jobs(bucket=bucket)


def _done_jobs(index_url: str, bucket: str) -> int:
    return count_rows(
        Path(index_url.removeprefix("sqlite:///")),
        "SELECT count(*) FROM jobs WHERE bucket = ? AND status = 'done'",
        bucket,
    )
