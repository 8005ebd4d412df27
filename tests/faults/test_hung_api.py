"""A transcription API that takes the request and never answers (tests/transcription_server.py
with ``hang_next``): each attempt ends at TRANSCRIBE_TIMEOUT_S, the job's lease is renewed
while it hangs and never lapses, the retries follow the policy (MINIO_MAX_RETRIES, with
backoff), and a SIGTERM during a hang stops the process within SHUTDOWN_GRACE_S, the job
then finished by the next process.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime

import pytest

from consumer.index import JobRecord, JobStatus
from tests import audio
from tests.faults.conftest import Rig, RigFactory
from tests.faults.harness import ConsumerProcess, Op
from tests.transcription_server import StandIn

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TIMEOUT_S = 2.0
LEASE_S = 4.0  # renewed every quarter: once a second
RETRIES = 2  # three attempts in all
BACKOFF_S = 0.5
GRACE_S = 3.0
# A process ends a little after its grace period: the interpreter's own exit, the
# clients' close. Measured 0.3-1.0 s here; the rest is for a CI machine running three
# stacks at once.
EXIT_SLACK_S = 5.0
# How long the scheduling of one attempt may add to the timeout (reading the object from
# MinIO, the index calls around it): measured under 0.6 s; room for a loaded machine, still
# far from the 13.8 s a trickled answer took before its attempt had one deadline.
ATTEMPT_SLACK_S = 3.0
# The stand-in notes a request's arrival once its headers are in, a few milliseconds after
# its attempt began (connecting, sending), and not as many each time: two arrivals can be
# a little less than the timeout apart (1.997 s for 2 s, seen in CI).
ARRIVAL_SKEW_S = 0.1


def hung_settings(api: StandIn) -> dict[str, str]:
    return {
        "TRANSCRIBE_BASE_URL": api.base_url,
        "TRANSCRIBE_TIMEOUT_S": str(TIMEOUT_S),
        "PROCESSING_LEASE_S": str(LEASE_S),
        "MINIO_MAX_RETRIES": str(RETRIES),
        "MINIO_RETRY_BACKOFF": str(BACKOFF_S),
        "SHUTDOWN_GRACE_S": str(GRACE_S),
    }


async def the_job(rig: Rig, key: str) -> JobRecord | None:
    jobs = [j for j in await rig.store.jobs(bucket=rig.bucket) if j.key == key]
    return jobs[0] if jobs else None


async def upload(rig: Rig, key: str) -> None:
    body = audio.wav(seconds=0.2, rate=8_000)
    uploader = rig.uploader([Op("put", key, body, "audio/wav")], pace_s=0)
    uploader.start()
    await asyncio.to_thread(uploader.wait, 60)


async def until_requests(api: StandIn, name: str, count: int, rig: Rig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while api.requests_by_file().get(name, 0) < count:
        for process in rig.processes:
            if process.wanted:
                process.assert_alive()
        assert time.monotonic() < deadline, f"{name}: fewer than {count} requests"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_a_hung_transcription_api(make_rig: RigFactory) -> None:
    with StandIn() as api:
        rig = await make_rig(processors=("transcribe",), env=hung_settings(api))
        rig.consumer.start()

        # 1. Two attempts hang; the third and last one the policy allows is answered.
        api.hang_next = 2
        await upload(rig, "hung/first.wav")
        leases: list[tuple[datetime, datetime, str]] = []  # (seen at, expires at, owner)
        deadline = time.monotonic() + 3 * (TIMEOUT_S + ATTEMPT_SLACK_S) + 3 * BACKOFF_S + 30
        while (job := await the_job(rig, "hung/first.wav")) is None or not job.status.finished:
            rig.consumer.assert_alive()
            assert time.monotonic() < deadline, f"the job did not end: {job}"
            if job is not None and job.status is JobStatus.RUNNING and job.lease_expires_at:
                leases.append((datetime.now(UTC), job.lease_expires_at, job.lease_owner or ""))
            await asyncio.sleep(0.2)
        assert job.status is JobStatus.DONE, job
        assert job.attempts == RETRIES + 1, job
        arrivals = [r.received_at for r in api.requests if r.filename == "first.wav"]
        assert len(arrivals) == RETRIES + 1, f"{len(arrivals)} requests for 3 attempts"
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        for n, gap in enumerate(gaps, start=1):
            # The attempt ended at the timeout, then the backoff of retry n (full jitter).
            most = TIMEOUT_S + BACKOFF_S * 2 ** (n - 1) + ATTEMPT_SLACK_S
            least = TIMEOUT_S - ARRIVAL_SKEW_S
            assert least <= gap <= most, f"attempt {n} took {gap:.3f} s, not {TIMEOUT_S} s"
        print(f"attempts ended and were retried after {', '.join(f'{g:.2f}' for g in gaps)} s")
        # The lease: one owner, renewed (its expiry moved on), never lapsed while running.
        assert len({owner for *_, owner in leases}) == 1, "the job changed hands"
        assert all(expires > seen for seen, expires, _ in leases), "the lease lapsed"
        moved = (leases[-1][1] - leases[0][1]).total_seconds()
        assert moved >= 2 * TIMEOUT_S - LEASE_S / 2, f"the lease moved on {moved:.1f} s only"
        print(f"lease renewed over the hangs: its expiry moved on {moved:.1f} s")

        # 2. An answer that trickles in (a byte every 0.25 s: every read gets something)
        # ends at the timeout too, not when the last byte came.
        api.trickle_next = 1
        await upload(rig, "hung/trickled.wav")
        deadline = time.monotonic() + 60
        while (job := await the_job(rig, "hung/trickled.wav")) is None or not job.status.finished:
            rig.consumer.assert_alive()
            assert time.monotonic() < deadline, f"the trickled job did not end: {job}"
            await asyncio.sleep(0.2)
        first, second = [r.received_at for r in api.requests if r.filename == "trickled.wav"]
        assert second - first <= TIMEOUT_S + BACKOFF_S + ATTEMPT_SLACK_S, (
            f"a trickled answer held its attempt {second - first:.1f} s (timeout {TIMEOUT_S} s)"
        )
        print(f"a trickled answer: the attempt ended and was retried after {second - first:.2f} s")

        # 3. A SIGTERM while a call hangs, in a process whose timeout is far away: the
        # grace period bounds the stop.
        await asyncio.to_thread(rig.consumer.stop)
        patient = ConsumerProcess(
            {**rig.env, "TRANSCRIBE_TIMEOUT_S": "600"}, rig.log_root / "patient"
        )
        rig.others.append(patient)
        patient.start()
        api.hang_next = 1
        await upload(rig, "hung/second.wav")
        await until_requests(api, "second.wav", 1, rig, timeout_s=60)
        await asyncio.sleep(0.5)  # well inside the hang
        asked = time.monotonic()
        code = await asyncio.to_thread(patient.stop, GRACE_S + EXIT_SLACK_S)
        took_s = time.monotonic() - asked
        assert code == 0, f"exit {code} after SIGTERM:\n{patient.log_tail()}"
        print(f"SIGTERM during a hung call: exited in {took_s:.1f} s (grace {GRACE_S} s)")
        stopped = await the_job(rig, "hung/second.wav")
        assert stopped is not None
        assert not stopped.status.finished, stopped

        # 4. The next process finishes it (the API answers now): nothing lost.
        rig.consumer.start()
        await rig.converge(timeout_s=60)
        await rig.finish(tracebacks=False)
        billed = api.requests_by_file()
        assert billed == {"first.wav": 3, "trickled.wav": 2, "second.wav": 2}, billed
