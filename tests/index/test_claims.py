"""Job claims without a database: which requests run, wait for a live lease, or need
nothing; one request per job."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from consumer.index.decisions import (
    ClaimDecision,
    JobStart,
    claim_decision,
    decide_claims,
    job_start,
    latest_requests,
)
from consumer.index.records import JobRecord, JobRequest, JobStatus, Lease

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def request(seq: int, key: str = "a.wav", *, etag: str | None = None) -> JobRequest:
    """Each sequencer its own content (etag) unless ``etag`` says otherwise."""
    return JobRequest("b", key, "", "transcribe", f"{seq:04X}", etag or f"e{seq}", 1)


def stored(
    seq: int,
    status: JobStatus,
    *,
    lease_left_s: float | None,
    key: str = "a.wav",
    etag: str | None = None,
) -> JobRecord:
    expires = None if lease_left_s is None else NOW + timedelta(seconds=lease_left_s)
    return JobRecord(
        "b", key, "", "transcribe", f"{seq:04X}", etag or f"e{seq}", status, 1, None, None,
        None, NOW, NOW, None, None, NOW, lease_owner="host:1:x", lease_expires_at=expires,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("row", "seq", "expected"),
    [
        (None, 1, ClaimDecision.RUN),
        (stored(1, JobStatus.DONE, lease_left_s=None), 1, ClaimDecision.SKIP),
        (stored(1, JobStatus.FAILED, lease_left_s=None), 1, ClaimDecision.SKIP),
        (stored(1, JobStatus.RUNNING, lease_left_s=30), 1, ClaimDecision.WAIT),
        (stored(1, JobStatus.PENDING, lease_left_s=30), 1, ClaimDecision.WAIT),
        (stored(1, JobStatus.RUNNING, lease_left_s=-1), 1, ClaimDecision.RUN),
        (stored(1, JobStatus.RUNNING, lease_left_s=0), 1, ClaimDecision.RUN),
        (stored(1, JobStatus.PENDING, lease_left_s=None), 1, ClaimDecision.RUN),
        # Newer content runs even while the old content's runner holds its lease.
        (stored(1, JobStatus.RUNNING, lease_left_s=30), 2, ClaimDecision.RUN),
        (stored(2, JobStatus.RUNNING, lease_left_s=30), 1, ClaimDecision.SKIP),
        (stored(2, JobStatus.DONE, lease_left_s=None), 1, ClaimDecision.SKIP),
    ],
)
def test_claim_decision(row: JobRecord | None, seq: int, expected: ClaimDecision) -> None:
    assert claim_decision(row, request(seq), now=NOW) is expected


# One write announced twice: the reconcile's repair (its Last-Modified, milliseconds) and
# then MinIO's own queued event (nanoseconds, so a greater sequencer) of the same bytes.
@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (stored(1, JobStatus.DONE, lease_left_s=None, etag="same"), ClaimDecision.SKIP),
        (stored(1, JobStatus.RUNNING, lease_left_s=30, etag="same"), ClaimDecision.WAIT),
        (stored(1, JobStatus.PENDING, lease_left_s=30, etag="same"), ClaimDecision.WAIT),
        (stored(1, JobStatus.RUNNING, lease_left_s=-1, etag="same"), ClaimDecision.RUN),
        # Writing the same bytes again is how a user asks a failed job for another try.
        (stored(1, JobStatus.FAILED, lease_left_s=None, etag="same"), ClaimDecision.RUN),
    ],
)
def test_the_same_content_under_a_newer_sequencer_is_the_same_job(
    row: JobRecord, expected: ClaimDecision
) -> None:
    assert claim_decision(row, request(2, etag="same"), now=NOW) is expected


def test_an_unknown_etag_is_never_the_same_content() -> None:
    row = replace(stored(1, JobStatus.DONE, lease_left_s=None), etag=None)
    assert claim_decision(row, replace(request(2), etag=None), now=NOW) is ClaimDecision.RUN


@pytest.mark.parametrize(
    ("row", "carried"),
    [
        (None, False),
        (stored(2, JobStatus.RUNNING, lease_left_s=-1), True),  # a dead runner's job
        (stored(1, JobStatus.RUNNING, lease_left_s=-1, etag="e2"), True),  # announced twice
        (stored(1, JobStatus.FAILED, lease_left_s=None, etag="e2"), False),  # asked again
        (stored(1, JobStatus.RUNNING, lease_left_s=30), False),  # newer content
    ],
)
def test_a_claim_carries_the_attempts_on_only_when_it_takes_the_job_over(
    row: JobRecord | None, carried: bool
) -> None:
    if row is not None:
        row = replace(row, attempts=3, last_error="busy")
    expected = JobStart(request(2), 3, "busy") if carried else JobStart(request(2), 0, None)
    assert job_start(row, request(2)) == expected


def test_decide_claims_sorts_requests_into_run_and_held() -> None:
    new, held, done = request(1, "new.wav"), request(1, "held.wav"), request(1, "done.wav")
    rows = {
        held.ident: stored(1, JobStatus.RUNNING, lease_left_s=5, key="held.wav"),
        done.ident: stored(1, JobStatus.DONE, lease_left_s=None, key="done.wav"),
    }
    claims = decide_claims([new, held, done], rows, now=NOW)
    assert (claims.run, claims.held) == ([new], [held])


def test_latest_requests_keeps_one_per_job_the_newest_in_first_order() -> None:
    a1, a2, b1 = request(1, "a.wav"), request(2, "a.wav"), request(1, "b.wav")
    assert latest_requests([a1, b1, a2, a1]) == [a2, b1]
    assert latest_requests([]) == []


def test_a_lease_expires_its_duration_after_now() -> None:
    assert Lease("o", 120.0).expires_at(NOW) == NOW + timedelta(seconds=120)
