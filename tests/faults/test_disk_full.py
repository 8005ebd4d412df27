"""A full disk: the SQLite index on a small filesystem (a tmpfs mounted for the test)
that fills up while events arrive. The consumer must stop before committing the offsets
of what it could not write, say why in /status, resume once space is back, and end with
the index equal to the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.harness import Op, plan_traffic
from tests.helpers import committed_offsets, topic_end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DISK_SIZE = "8m"
ROOMY_SIZE = "64m"
FULL_FOR_S = 6.0
RESUME_BOUND_S = 45.0
REPORT_DEADLINE_S = 30.0


@contextlib.contextmanager
def mounted_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``where`` for the block (needs root: CI runs as root)."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        message = f"cannot mount a small filesystem: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        # Lazy: a process of the test that still holds a file there cannot block it.
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", DISK_SIZE) as where:
        yield where


def usage(disk: Path) -> str:
    """Free bytes and inodes of ``disk``, and its largest files (for the log)."""
    stat = os.statvfs(disk)
    files = sorted(
        ((p.stat().st_size, str(p.relative_to(disk))) for p in disk.rglob("*") if p.is_file()),
        reverse=True,
    )
    return (
        f"{stat.f_bavail * stat.f_frsize} of {stat.f_blocks * stat.f_frsize} bytes and"
        f" {stat.f_favail} inodes free, largest files {files[:5]}"
    )


def fill(disk: Path) -> None:
    """Write a ballast file until the filesystem refuses more. Whoever else writes there
    (the index's own growth) may take the last bytes first: full is full."""
    try:
        with (disk / "ballast").open("ab", buffering=0) as out:
            _write_until_full(out, b"\0" * 65536)
            _write_until_full(out, b"\0" * 1024)  # what fits in smaller pieces too
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    print(f"filled: {usage(disk)}")


def _write_until_full(out: BinaryIO, chunk: bytes) -> None:
    try:
        while True:
            out.write(chunk)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise


def resize(disk: Path, size: str) -> None:
    """Space comes back: the tmpfs at ``disk`` grows to ``size``."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(disk)], check=True)


def traffic_under(prefix: str, ops: list[Op]) -> list[Op]:
    """``ops`` with their keys under ``prefix``: a second wave of planned traffic must not
    overwrite the first's recordings (each is written once, one job each). Pure."""
    return [dataclasses.replace(op, key=f"{prefix}/{op.key}") for op in ops]


@pytest.mark.parametrize("backend_name", ["sqlite"])
async def test_the_sqlite_index_on_a_disk_that_fills_up(
    make_rig: RigFactory, small_disk: Path
) -> None:
    rig = await make_rig(index_url=f"sqlite:///{small_disk / 'index.sqlite3'}")
    rig.consumer.start()
    warm_up = rig.uploader(plan_traffic(rig.rng, 20), pace_s=0.02)
    warm_up.start()
    await asyncio.to_thread(warm_up.wait, 60)
    await rig.converge(timeout_s=60)

    await asyncio.to_thread(fill, small_disk)
    uploader = rig.uploader(traffic_under("full", plan_traffic(rig.rng, 40)), pace_s=0.02)
    uploader.start()
    await asyncio.to_thread(uploader.wait, 60)
    # /status says why the indexer waits.
    deadline = time.monotonic() + REPORT_DEADLINE_S
    while True:
        rig.consumer.assert_alive()
        report = await rig.status()
        failure = report["workers"]["indexer"].get("last_failure") or ""
        if "full" in failure:
            break
        assert time.monotonic() < deadline, f"/status did not say the disk is full: {report}"
        await asyncio.sleep(0.5)
    assert report["status"] == "degraded", report["status"]
    print(f"/status while the disk is full: {report['status']}: indexer {failure!r}")
    # Nothing committed past what the index holds: the group stays behind the topic's end.
    held = await committed_offsets(rig.bootstrap, rig.group, rig.topic, len(rig.start))
    await asyncio.sleep(FULL_FOR_S)
    rig.consumer.assert_alive()
    ends = await topic_end_offsets(rig.bootstrap, rig.topic)
    later = await committed_offsets(rig.bootstrap, rig.group, rig.topic, len(rig.start))
    assert later == held, f"offsets committed while the disk was full: {held} -> {later}"
    assert any(later.get(p, 0) < end for p, end in ends.items()), "nothing was left to commit"

    resize(small_disk, ROOMY_SIZE)  # space is back
    freed = time.monotonic()
    await rig.converge(timeout_s=RESUME_BOUND_S)
    print(f"caught up {time.monotonic() - freed:.1f} s after space came back")
    report = await rig.status()
    assert report["workers"]["indexer"]["last_failure"] is None, report["workers"]
    await rig.finish(tracebacks=False)
