"""``replay --since TIME``: index the events topic again from a moment on.

A new consumer group ``<KAFKA_GROUP_ID>-replay-<UTC time>`` gets its offsets set to the
first message at or after TIME (Kafka's ``offsets_for_times``; a partition with nothing
that recent starts at its end), then the ordinary indexer runs in burst mode with that
group until it has read up to the end offsets as they were when the replay started.

Replaying is idempotent: the journal knows every event by its identity (bucket, key,
version, event name, sequencer), so events indexed before are counted as duplicates and
change nothing; lost ones (a fresh index file, a restored backup) are written. The main
group's offsets are never touched. Poison messages in the window go to the DLQ again,
with ``x-consumer-group`` naming the replay group.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from consumer.durations import duration_or_none
from consumer.errors import InvalidInput, KafkaUnavailable
from consumer.index import IndexStore
from consumer.indexer import Indexer
from consumer.kafka.clients import (
    close_client,
    new_admin,
    new_consumer,
    start_client,
    topic_partitions,
)
from consumer.settings import Settings


def parse_since(text: str, now: datetime) -> datetime:
    """``2h``, ``30m``, ``7d`` (before ``now``) or an ISO-8601 time (UTC when it names no
    offset), as an aware UTC datetime. Raises InvalidInput, also for a time after ``now``.
    """
    raw = text.strip()
    ago = duration_or_none(raw)
    try:
        moment = _since_moment(raw, ago, now)
    except OverflowError:  # a duration or a UTC offset taking it past year 1 or 9999
        raise InvalidInput(f"--since {text!r} is outside the years 1 to 9999") from None
    except ValueError:
        raise InvalidInput(
            f"--since {text!r} is neither a duration (30m, 2h, 7d, 1w) nor an ISO-8601 time"
        ) from None
    if moment > now:
        raise InvalidInput(f"--since {text!r} is in the future")
    return moment


def _since_moment(raw: str, ago: timedelta | None, now: datetime) -> datetime:
    if ago is not None:
        return (now - ago).astimezone(UTC)
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def replay_group(base: str, now: datetime) -> str:
    return f"{base}-replay-{now:%Y%m%dT%H%M%S%fZ}"


@dataclass(frozen=True)
class ReplayPlan:
    """Where the replay group starts and where it stops, per partition."""

    group: str
    since: datetime
    start: dict[TopicPartition, int]
    end: dict[TopicPartition, int]

    @property
    def messages(self) -> int:
        return sum(self.end[tp] - self.start[tp] for tp in self.end)


@dataclass(frozen=True)
class ReplayReport:
    group: str
    since: datetime
    messages_in_window: int
    messages_read: int
    events_read: int
    journaled: int  # new journal entries: events the index did not have
    duplicates: int
    objects_changed: int
    stale_ignored: int
    dead_lettered: int

    def fields(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "since": self.since.isoformat(),
            "messages_in_window": self.messages_in_window,
            "messages_read": self.messages_read,
            "events_read": self.events_read,
            "journaled": self.journaled,
            "duplicates": self.duplicates,
            "objects_changed": self.objects_changed,
            "stale_ignored": self.stale_ignored,
            "dead_lettered": self.dead_lettered,
        }


async def plan_replay(settings: Settings, since: datetime, group: str) -> ReplayPlan:
    """Find the offsets of ``since`` and the current ends, and commit the starts for
    ``group``. Raises KafkaUnavailable (with run's one line when the credentials or the
    certificate are refused), InvalidInput (no such topic)."""
    topic = settings.kafka_events_topic
    partitions = await _partitions_of(settings, topic, group)
    consumer = new_consumer(
        settings, client_id=f"voxpersona-{group}", group_id=group, enable_auto_commit=False
    )
    await start_client(consumer, settings)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        end = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        start = {tp: found[tp].offset if found.get(tp) is not None else end[tp] for tp in tps}
        consumer.assign(tps)
        await consumer.commit(start)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot prepare the replay on {topic}: {exc}") from exc
    finally:
        await close_client(consumer)
    return ReplayPlan(group, since, start, dict(end))


async def _partitions_of(settings: Settings, topic: str, group: str) -> list[int]:
    admin = new_admin(settings, client_id=f"voxpersona-{group}-admin")
    await start_client(admin, settings)
    try:
        partitions = await topic_partitions(admin, topic)
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot prepare the replay on {topic}: {exc}") from exc
    finally:
        await close_client(admin)
    if not partitions:
        raise InvalidInput(f"no topic named {topic!r}")
    return partitions


async def run_replay(
    settings: Settings, store: IndexStore, since: datetime, *, group: str | None = None
) -> ReplayReport:
    """Replay the events topic from ``since`` into ``store`` (see the module docstring)."""
    group = group or replay_group(settings.kafka_group_id, datetime.now(UTC))
    plan = await plan_replay(settings, since, group)
    stats = await Indexer(settings, store, group_id=group, stop_at=plan.end).run(burst=True)
    return ReplayReport(
        group=group,
        since=since,
        messages_in_window=plan.messages,
        messages_read=stats.messages,
        events_read=stats.events,
        journaled=stats.journaled,
        duplicates=stats.duplicates,
        objects_changed=stats.objects_changed,
        stale_ignored=stats.stale_ignored,
        dead_lettered=stats.dead_lettered,
    )
