"""``reconcile``: the buckets' real content against the index, and the repair of the gaps.

Events can be lost for good (a bucket without notifications for a while, a target
removed, a MinIO queue full, replication, batch expiry): the bucket listing is the only
truth then. ``compare`` (pure) sets a listing beside the index's live rows:

* ``missing`` — in the bucket, not in the index;
* ``stale``   — in both, but size or etag differ;
* ``extra``   — live in the index, gone from the bucket.

``--repair`` writes the objects' real state through the normal batch path
(``IndexStore.apply_batch``) as events of the journal kind ``reconciled``, read from a
HEAD of each object just before: ``RECONCILE_FOUND`` (an upsert) or ``RECONCILE_GONE`` (a
tombstone). Each is journaled with the position ``reconcile:<run id>`` / 0 / n, so repairs
are told apart from MinIO's events and a second run repeats nothing.

Repairs never fight real events, because they go through ``decide`` like any event:
* a found object's sequencer is its Last-Modified in nanoseconds (milliseconds from the
  listing when the HEAD saw the same content, else the HEAD's seconds); MinIO's own
  sequencer of that write is the same time to the nanosecond, so it is never older than
  the repair, and any later write or removal is newer and wins. One exception: the index
  holds the object (version) as removed by an event at least as new, yet the HEAD, read
  after that removal, finds it: MinIO undid the delete (a node that missed it came back),
  and the bucket is the truth. The repair is then stamped like a gone one (below), past
  the removal, so that it wins;
* a gone object's tombstone is stamped with the clock read *before* its HEAD (at least
  one past the stored row's sequencer): a write that happens after the HEAD saw nothing
  is newer and wins. This assumes the clocks of MinIO and of this host agree to within
  the time between two writes of one key.

Processing: a found object that was missing or stale is published to the events topic as
a MinIO-shaped ``s3:ObjectCreated:Reconciled`` message, so the processor group runs the
jobs its lost create event would have started (the indexer sees a journaled duplicate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final, Protocol

from aiokafka.errors import KafkaError
from minio import Minio

from consumer.errors import (
    ConsumerError,
    InvalidInput,
    KafkaUnavailable,
    NotFound,
    ReconcileFailed,
)
from consumer.events import (
    RECONCILE_FOUND,
    ObjectEvent,
)
from consumer.index import BatchResult, IndexStore, KafkaPosition, ObjectQuery, ObjectRecord
from consumer.kafka.clients import close_client, new_producer, start_client
from consumer.minio import FailureKind, MinioFailure, minio_call
from consumer.repair.compare import (
    Difference,
    HeadState,
    KeyFilter,
    ListedObject,
    Mismatch,
    ReconcileReport,
    Repair,
    compare,
    found_event,
    found_moment,
    found_sequencer,
    gone_event,
    minio_message,
    new_run_id,
    normalise_etag,
)
from consumer.settings import Settings

_PAGE: Final = 1000
_REPAIRS_PER_BATCH: Final = 500


class Progress(Protocol):
    """Where a long reconcile says how far it is (the CLI draws it on the terminal)."""

    def show(self, text: str) -> None: ...

    def done(self) -> None: ...


class NoProgress:
    """A reconcile that says nothing while it runs (the summary says the rest)."""

    def show(self, text: str) -> None:
        pass

    def done(self) -> None:
        pass


# --- I/O --------------------------------------------------------------------------------


class Reconciler:
    """Compares buckets with the index (``differences``) and repairs them (``repair``)."""

    def __init__(
        self,
        settings: Settings,
        store: IndexStore,
        minio: Minio,
        *,
        progress: Progress | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._store = store
        self._minio = minio
        self._progress = progress or NoProgress()
        self._clock = clock
        self.report = ReconcileReport(new_run_id(clock()))

    async def differences(self, bucket: str, covers: KeyFilter | None = None) -> list[Mismatch]:
        """List ``bucket`` (every version when it is versioned; only keys ``covers``
        accepts) and its live index rows; their differences, also added to the report."""
        what = f"cannot list bucket {bucket}"

        def listing_error(failure: MinioFailure) -> ConsumerError:
            if failure.bucket_missing:
                return InvalidInput(f"no bucket named {bucket!r}")
            return ReconcileFailed(f"{what}: {failure.message}")

        listed = await minio_call(
            lambda: self._list_bucket(bucket),
            what=what,
            settings=self._settings,
            translate=listing_error,
        )
        if covers is not None:
            listed = [obj for obj in listed if covers(obj.key)]
        indexed = await self._indexed(bucket)
        found = compare(listed, indexed)
        self.report.buckets.append(bucket)
        self.report.listed += len(listed)
        self.report.indexed += sum(1 for row in indexed if not row.deleted)
        self.report.mismatches += found
        return found

    async def repair(self) -> list[Mismatch]:
        """Repair every difference found so far (see the module docstring); the
        differences with their outcome. Raises ReconcileFailed or IndexUnavailable."""
        total = len(self.report.mismatches)
        repaired: list[Mismatch] = []
        items: list[tuple[ObjectEvent, KafkaPosition | None]] = []
        to_process: list[ObjectEvent] = []
        for number, mismatch in enumerate(self.report.mismatches, start=1):
            self._progress.show(f"reconcile: repairing {number}/{total}")
            event = await self._repair_event(mismatch)
            outcome = _outcome(event)
            repaired.append(replace(mismatch, repair=outcome))
            if event is None:
                continue
            position = KafkaPosition(f"reconcile:{self.report.run_id}", 0, len(items))
            items.append((event, position))
            if outcome is Repair.REINDEXED and mismatch.kind is not Difference.EXTRA:
                to_process.append(event)
        self._progress.done()
        self.report.mismatches = repaired
        self.report.repaired = await self._apply(items)
        await self._queue_for_processing(to_process)
        return repaired

    # --- MinIO --------------------------------------------------------------------------

    def _list_bucket(self, bucket: str) -> list[ListedObject]:
        """Blocking; run through ``minio_call``, which translates its failures."""
        versioned = self._minio.get_bucket_versioning(bucket).status in ("Enabled", "Suspended")
        listed: list[ListedObject] = []
        for obj in self._minio.list_objects(bucket, recursive=True, include_version=versioned):
            if obj.is_delete_marker or obj.is_dir:
                continue
            listed.append(
                ListedObject(
                    bucket=bucket,
                    key=obj.object_name or "",
                    version_id=(obj.version_id or "") if versioned else "",
                    size=obj.size or 0,
                    etag=normalise_etag(obj.etag) or "",
                    last_modified=(obj.last_modified or datetime.now(UTC)).astimezone(UTC),
                )
            )
            if len(listed) % _PAGE == 0:
                self._progress.show(f"reconcile: {bucket}: listed {len(listed)}")
        return listed

    async def _head(self, bucket: str, key: str, version_id: str) -> HeadState | None:
        """The object (version) as MinIO has it; None when it is not there."""
        what = f"cannot HEAD {bucket}/{key}"

        def head_error(failure: MinioFailure) -> ConsumerError:
            # A missing bucket is no proof that the objects are gone: never a tombstone.
            if failure.kind is FailureKind.GONE and not failure.bucket_missing:
                return NotFound(failure.message)
            return ReconcileFailed(f"{what}: {failure.message}")

        try:
            stat = await minio_call(
                lambda: self._minio.stat_object(bucket, key, version_id=version_id or None),
                what=what,
                settings=self._settings,
                translate=head_error,
            )
        except NotFound:
            return None
        headers = {name: str(value) for name, value in (stat.metadata or {}).items()}
        return HeadState(
            version_id=(stat.version_id or version_id) if version_id else "",
            size=stat.size or 0,
            etag=normalise_etag(stat.etag),
            content_type=stat.content_type,
            metadata=headers,
            last_modified=(stat.last_modified or self._clock()).astimezone(UTC),
        )

    async def _repair_event(self, mismatch: Mismatch) -> ObjectEvent | None:
        # Read the clock before the HEAD: a write after the HEAD is newer than this stamp.
        stamp = self._clock()
        head = await self._head(mismatch.bucket, mismatch.key, mismatch.version_id)
        if head is not None:
            moment = found_moment(head, mismatch.listed)
            sequencer = found_sequencer(moment, mismatch.removed, stamp)
            return found_event(
                mismatch.bucket, mismatch.key, head, moment, self.report.run_id, sequencer=sequencer
            )
        if mismatch.indexed is None:
            return None
        return gone_event(mismatch.indexed, stamp, self.report.run_id)

    # --- the index and Kafka ------------------------------------------------------------

    async def _indexed(self, bucket: str) -> list[ObjectRecord]:
        """The bucket's rows, tombstones too (a listed object the index holds as removed
        is repaired over its removal: see ``found_sequencer``)."""
        rows: list[ObjectRecord] = []
        after: tuple[str, str, str] | None = None
        while True:
            page = await self._store.list_objects(
                ObjectQuery(bucket=bucket, limit=_PAGE, after=after, include_deleted=True)
            )
            rows += page
            if len(page) < _PAGE:
                return rows
            after = (page[-1].bucket, page[-1].key, page[-1].version_id)

    async def _apply(
        self, items: Sequence[tuple[ObjectEvent, KafkaPosition | None]]
    ) -> BatchResult:
        totals = BatchResult(0, 0, 0, 0)
        for start in range(0, len(items), _REPAIRS_PER_BATCH):
            result = await self._store.apply_batch(items[start : start + _REPAIRS_PER_BATCH])
            totals = BatchResult(
                totals.journaled + result.journaled,
                totals.duplicates + result.duplicates,
                totals.objects_changed + result.objects_changed,
                totals.stale_ignored + result.stale_ignored,
            )
        return totals

    async def _queue_for_processing(self, events: Sequence[ObjectEvent]) -> None:
        if not events:
            return
        producer = new_producer(
            self._settings,
            client_id=f"voxpersona-reconcile-{self.report.run_id}",
            acks="all",
            enable_idempotence=True,
        )
        topic = self._settings.kafka_events_topic
        not_queued = (
            f"the index is repaired, but {len(events)} object(s) could not be queued"
            f" for processing on {topic}"
        )
        try:
            await start_client(producer, self._settings)
        except KafkaUnavailable as exc:
            if not exc.retriable:
                raise  # refused credentials or certificate: run's own line
            raise KafkaUnavailable(f"{not_queued}: {exc}") from exc
        try:
            sends = [
                await producer.send(
                    topic, value=minio_message(e), key=f"{e.bucket}/{e.key}".encode()
                )
                for e in events
            ]
            await asyncio.gather(*sends)
        except KafkaError as exc:
            raise KafkaUnavailable(f"{not_queued}: {exc}") from exc
        finally:
            await close_client(producer)
        self.report.queued_for_processing = len(events)


def _outcome(event: ObjectEvent | None) -> Repair:
    if event is None:
        return Repair.VANISHED
    return Repair.REINDEXED if event.event_name == RECONCILE_FOUND else Repair.TOMBSTONED


async def run_reconcile(
    settings: Settings,
    store: IndexStore,
    minio: Minio,
    buckets: Mapping[str, KeyFilter | None],
    *,
    repair: bool,
    progress: Progress | None = None,
) -> ReconcileReport:
    """Compare ``buckets`` (name → the keys to compare, None: all) with the index, and
    repair them if asked."""
    reconciler = Reconciler(settings, store, minio, progress=progress)
    for bucket, covers in buckets.items():
        await reconciler.differences(bucket, covers)
    if repair:
        await reconciler.repair()
    return reconciler.report
