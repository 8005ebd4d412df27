"""Scale-out on the real stack: several consumer processes share the roles, join, leave
and are killed with -9 while recordings arrive — and no paid transcription is repeated
for a runner that lives, no process crashes, nothing is lost.

The transcription API is the local stand-in (tests/transcription_server.py), slowed
down so jobs are in flight when processes come and go; it counts every request, which
is what a paid API would bill. Each scenario prints its figures (requests per recording,
takeover times) for the record.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from consumer.index import JobRecord, JobStatus
from tests import audio
from tests.faults.conftest import UPLOAD_TIMEOUT_S, Rig, RigFactory
from tests.faults.harness import ConsumerProcess, Op, plan_traffic
from tests.transcription_server import StandIn

pytestmark = [pytest.mark.integration, pytest.mark.faults]

RECORDINGS = 12


def recordings(count: int) -> list[Op]:
    """``count`` short WAV uploads, each key written once (one job per recording)."""
    body = audio.wav(seconds=0.2, rate=8_000)
    return [Op("put", f"calls/take {n:02}.wav", body, "audio/wav") for n in range(count)]


def split_roles(api: StandIn, lease_s: float, **more: str) -> dict[str, str]:
    """Settings of a deployment that runs indexers and processors as separate processes."""
    return {
        "TRANSCRIBE_BASE_URL": api.base_url,
        "PROCESSING_LEASE_S": str(lease_s),
        # Separate indexer processes own the malformed messages.
        "PROCESSING_DEAD_LETTER_MALFORMED": "false",
        **more,
    }


async def until(
    condition: Callable[[], Awaitable[bool]], what: str, rig: Rig, timeout_s: float = 90
) -> None:
    """Wait for ``condition``, checking that every process that should run still does."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        for process in rig.processes:
            if process.wanted:
                process.assert_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what} (seed {rig.seed})"
        await asyncio.sleep(0.2)


def started(*processes: ConsumerProcess) -> None:
    for process in processes:
        process.start()


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_processors_join_and_leave_and_each_recording_is_transcribed_once(
    make_rig: RigFactory,
) -> None:
    with StandIn(delay_s=3.0) as api:
        rig = await make_rig(
            role="indexer",
            processors=("transcribe",),
            env=split_roles(api, lease_s=20, PROCESSING_CONCURRENCY="2"),
        )
        first = rig.spawn("processor")
        started(rig.consumer, first)
        uploader = rig.uploader(recordings(RECORDINGS), pace_s=0.5)
        uploader.start()

        async def requests_at_least(count: int) -> bool:
            return len(api.requests) >= count

        # Processors join while jobs are in flight, one leaves (SIGTERM) mid-way.
        await until(lambda: requests_at_least(2), "the first transcriptions", rig)
        second = rig.spawn("processor")
        second.start()
        await asyncio.sleep(4)
        third = rig.spawn("processor")
        third.start()
        await until(lambda: requests_at_least(6), "half the transcriptions", rig)
        code = await asyncio.to_thread(second.stop)
        assert code == 0, f"a leaving processor exited {code}:\n{second.log_tail()}"
        await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
        await rig.converge()
        await rig.finish(tracebacks=False)

        per_recording = api.requests_by_file()
        print(f"transcription requests per recording: {sorted(per_recording.items())}")
        assert per_recording == {f"take {n:02}.wav": 1 for n in range(RECORDINGS)}
        waited = sum(
            event.get("jobs", 0)
            for process in rig.processes
            for event in process.log_events()
            if event.get("event") == "jobs held by another runner's live lease; waiting"
        )
        print(f"jobs a processor found under another's live lease and waited for: {waited}")


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
async def test_kill_9_mid_job_is_taken_over_only_after_its_lease_expired(
    make_rig: RigFactory,
) -> None:
    lease_s = 15.0
    # Each request takes 5 s: long enough that the kill lands while one is in flight
    # (found by polling every 0.2 s), and the takeover's own request adds only that.
    with StandIn(delay_s=5.0) as api:
        rig = await make_rig(
            role="indexer",
            processors=("transcribe",),
            env=split_roles(api, lease_s=lease_s, PROCESSING_CONCURRENCY="2"),
        )
        processors = [rig.spawn("processor"), rig.spawn("processor")]
        started(rig.consumer, *processors)
        uploader = rig.uploader(recordings(4), pace_s=0.2)
        uploader.start()
        await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)

        async def running() -> list[JobRecord]:
            jobs = await rig.store.jobs(bucket=rig.bucket, status=JobStatus.RUNNING)
            return [j for j in jobs if j.lease_owner and j.lease_owner.split(":")[-2].isdigit()]

        async def a_request_in_flight() -> bool:
            return bool(await running()) and len(api.requests) > 0

        await until(a_request_in_flight, "a transcription in flight", rig)
        victim = rig.owner_of((await running())[0].lease_owner or "")
        owner_pid = victim.pid
        await asyncio.to_thread(victim.kill9)
        killed_at = time.time()
        billed_before = api.requests_by_file()
        # What the dead runner held, and until when (no renewal can come any more).
        held = [
            j
            for j in await rig.store.jobs(bucket=rig.bucket)
            if not j.status.finished and j.lease_owner and f":{owner_pid}:" in j.lease_owner
        ]
        assert held, "the killed processor held no job"

        await rig.converge(timeout_s=150)
        await rig.finish(crashes=True, tracebacks=False)

        billed = api.requests_by_file()
        print(f"transcription requests per recording: {sorted(billed.items())}")
        takeovers: list[float] = []
        for job in held:
            name = job.key.rsplit("/", 1)[-1]
            assert job.lease_expires_at is not None
            expired_at = job.lease_expires_at.timestamp()
            after_kill = [r.received_at for r in api.requests if r.filename == name]
            after_kill = [t for t in after_kill if t > killed_at]
            assert len(after_kill) == 1, f"{name}: {len(after_kill)} requests after the kill"
            # Never before the lease expired (0.2 s for clock granularity).
            assert after_kill[0] >= expired_at - 0.2, (
                f"{name} taken over {expired_at - after_kill[0]:.1f} s before its lease expired"
            )
            assert billed[name] == billed_before.get(name, 0) + 1
            takeovers.append(after_kill[0] - killed_at)
        for name, count in billed.items():
            if name not in {j.key.rsplit("/", 1)[-1] for j in held}:
                assert count == 1, f"{name}: {count} requests, its runner lived"
        finished = {j.key: j for j in await rig.store.jobs(bucket=rig.bucket)}
        for job in held:
            assert finished[job.key].status is JobStatus.DONE
            assert finished[job.key].lease_owner != job.lease_owner
        print(
            f"takeover after kill -9 (lease {lease_s:g} s): "
            + ", ".join(f"{t:.1f} s" for t in sorted(takeovers))
        )


@pytest.mark.parametrize("backend_name", ["postgres"])
async def test_two_indexers_and_two_processors_killed_in_turn(make_rig: RigFactory) -> None:
    with StandIn() as api:
        rig = await make_rig(role="indexer", env=split_roles(api, lease_s=6))
        indexer = rig.spawn("indexer")
        first, second = rig.spawn("processor"), rig.spawn("processor")
        started(rig.consumer, indexer, first, second)
        # 120 uploads over ~25 s: the four kills (each after some progress, 0.5–2 s
        # apart) land while they go on, and the uploads set the scenario's length.
        uploader = rig.uploader(plan_traffic(rig.rng, 120), pace_s=0.2)
        uploader.start()

        async def work_done() -> int:
            journal = (await rig.store.counts())["journal"]
            return journal + len(await rig.store.jobs(bucket=rig.bucket, status=JobStatus.DONE))

        for victim in (rig.consumer, indexer, first, second):
            before = await work_done()

            async def progressed(mark: int = before) -> bool:
                return await work_done() > mark

            await until(progressed, f"work before killing a {victim.role}", rig)
            await asyncio.sleep(rig.rng.uniform(0.5, 2.0))
            await asyncio.to_thread(victim.kill9)
            victim.start()
        await asyncio.to_thread(uploader.wait, UPLOAD_TIMEOUT_S)
        assert sum(p.kills for p in rig.processes) == 4
        await rig.converge()
        await rig.finish(crashes=True, tracebacks=False)
        jobs = await rig.store.jobs(bucket=rig.bucket, limit=100_000)
        attempts = Counter(j.attempts for j in jobs)
        print(f"probe jobs by attempts after 4 kills: {sorted(attempts.items())}")
