"""The Python API the bot (and scripts) use: presign, upload, stream, query, delete, health.

Ingestion does not go through here: MinIO's events do. This is the convenience layer the
seeds' manager offered, rebuilt on top of the event-driven design — uploads and deletes go
straight to MinIO (the index follows through the events), queries read the index.

    async with VoxClient(Settings()) as client:
        post = await client.presign_upload("42", "interview.ogg", session_type="interview")
        … the bot hands post.url / post.fields to the uploader …
        record = await client.wait_indexed(post.bucket, post.key)
        outcomes = await client.wait_processed(post.bucket, post.key, timeout_s=600)
        text = (await client.result(post.bucket, post.key, "transcribe"))["result"]["text"]
        … or, event-driven: ``async for done in client.processed(processors=["transcribe"])``

minio-py is synchronous; its calls run in worker threads so the event loop stays free.
Every failure is a ``consumer.errors.ConsumerError`` with ``retriable`` set.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

from minio import Minio
from minio.datatypes import Object, PostPolicy
from minio.deleteobjects import DeleteObject
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from consumer.client.feed import FeedFilter, ProcessedFeed, processors_filter
from consumer.client.files import UPLOAD_PART_SIZE, FileDigest, content_type_for, digest_file
from consumer.client.history import ObjectHistory, load_history
from consumer.client.presign import (
    DEFAULT_EXPIRY,
    PresignedPost,
    PresignedPut,
    check_expiry,
    host_header,
    object_path,
    post_conditions,
    presign_v4,
    put_headers,
    upload_metadata,
)
from consumer.errors import (
    ConsumerError,
    DownloadFailed,
    InvalidInput,
    NotFound,
    UploadCancelled,
    UploadFailed,
)
from consumer.index import (
    IndexStore,
    JobRecord,
    JobStatus,
    ObjectQuery,
    ObjectRecord,
    UsageRow,
    Versions,
    open_index,
)
from consumer.minio import (
    MINIO_ERRORS,
    as_error,
    classify_failure,
    is_gone,
    minio_call,
    minio_client,
)
from consumer.names import SHA256, check_bucket, check_key, check_user_id, upload_key
from consumer.results import ProcessedResult, ResultLocation, result_location_key
from consumer.retention.policy import load_policies
from consumer.settings import Settings
from consumer.telemetry import minio_operation, object_attributes, traceparent_of, tracer

T = TypeVar("T")

_STREAM_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True)
class UploadProgress:
    """Where an upload is: bytes handed to the network so far, of ``total_bytes``."""

    key: str
    bytes_sent: int
    total_bytes: int

    @property
    def fraction(self) -> float:
        return self.bytes_sent / self.total_bytes if self.total_bytes else 1.0


ProgressCallback = Callable[[UploadProgress], None]


@dataclass(frozen=True)
class UploadResult:
    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int
    sha256: str
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)
    multipart: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "etag": self.etag,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "metadata": self.metadata,
            "multipart": self.multipart,
        }


@dataclass(frozen=True)
class DeleteResult:
    bucket: str
    key: str
    version_id: str | None
    outcome: Literal["deleted", "absent", "failed"]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "outcome": self.outcome,
            "error": self.error,
        }


def minio_failure(
    exc: BaseException, what: str, failure: type[ConsumerError] = UploadFailed
) -> ConsumerError:
    """A minio/urllib3 exception as this package's error, with ``retriable`` set right
    (see ``consumer.minio.as_error``)."""
    if isinstance(exc, ConsumerError):
        return exc
    if isinstance(exc, MINIO_ERRORS):
        return as_error(classify_failure(exc), what, failure)
    return failure(f"{what}: {type(exc).__name__}: {exc}", retriable=False)


class _ProgressRelay:
    """minio-py's progress protocol (called from its upload threads) → UploadProgress;
    also the upload's cancel switch (minio-py calls it before every part it sends)."""

    def __init__(self, key: str, total: int, callback: ProgressCallback | None) -> None:
        self._key = key
        self._total = total
        self._callback = callback
        self._sent = 0
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise UploadCancelled(self._key)

    def set_meta(self, object_name: str, total_length: int) -> None:
        self._check()
        with self._lock:  # a retry starts over
            self._sent = 0
        if self._callback is not None:
            self._callback(UploadProgress(self._key, 0, self._total))

    def update(self, size: int) -> None:
        self._check()
        with self._lock:
            self._sent = min(self._total, self._sent + size)
            sent = self._sent
        if self._callback is not None:
            self._callback(UploadProgress(self._key, sent, self._total))


class VoxClient:
    """Async client of the storage and its index; use as ``async with``."""

    def __init__(self, settings: Settings, *, minio: Minio | None = None) -> None:
        self.settings = settings
        self._minio = minio or minio_client(settings)
        # Presigned uploads are signed with the uploader identity when it is configured
        # (setup --identities): a leaked URL or policy can then only ever put audio.
        self._upload_signer = (
            settings.model_copy(
                update={
                    "minio_access_key": settings.minio_uploader_access_key,
                    "minio_secret_key": settings.minio_uploader_secret_key,
                }
            )
            if settings.minio_uploader_secret_key.get_secret_value()
            else settings
        )
        self._store: IndexStore | None = None
        self._store_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"VoxClient(endpoint={self.settings.minio_endpoint!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None

    # --- presigned requests ------------------------------------------------------------

    async def presign_upload(
        self,
        user_id: str,
        file_name: str,
        *,
        content_type: str | None = None,
        session_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        traceparent: str | None = None,
        expires: timedelta = DEFAULT_EXPIRY,
        max_size: int | None = None,
    ) -> PresignedPost:
        """A POST policy for one new object of ``user_id`` in the audio bucket: key, content
        type, size range and metadata are fixed; MinIO refuses a form that changes them."""
        bucket, key, content_type, meta = self._new_upload(
            user_id, file_name, content_type, session_type, metadata, traceparent
        )
        limit = self._size_limit(max_size)
        expires_at = _now() + check_expiry(expires)
        policy = PostPolicy(bucket, expires_at)
        for name, value in post_conditions(key, content_type, meta).items():
            policy.add_equals_condition(name, value)
        policy.add_content_length_range_condition(1, limit)
        fields = minio_client(self._upload_signer).presigned_post_policy(policy)
        fields.update(post_conditions(key, content_type, meta))
        return PresignedPost(
            url=f"{self._base_url()}/{bucket}",
            fields=fields,
            bucket=bucket,
            key=key,
            max_size=limit,
            expires_at=expires_at,
        )

    async def presign_put(
        self,
        user_id: str,
        file_name: str,
        *,
        content_type: str | None = None,
        session_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        traceparent: str | None = None,
        expires: timedelta = DEFAULT_EXPIRY,
    ) -> PresignedPut:
        """The PUT variant: a URL whose signature covers the content type and metadata, so
        the uploader must send exactly ``headers``. (A PUT cannot bound the size; prefer
        the POST policy when that matters.)"""
        bucket, key, content_type, meta = self._new_upload(
            user_id, file_name, content_type, session_type, metadata, traceparent
        )
        expires = check_expiry(expires)
        now = _now()
        headers = put_headers(content_type, meta)
        url = presign_v4(
            method="PUT",
            scheme="https" if self.settings.minio_use_ssl else "http",
            host=host_header(self.settings.minio_endpoint, self.settings.minio_use_ssl),
            path=object_path(bucket, key),
            headers=headers,
            access_key=self._upload_signer.minio_access_key,
            secret_key=self._upload_signer.minio_secret_key.get_secret_value(),
            region=self.settings.minio_region,
            now=now,
            expires=expires,
        )
        return PresignedPut(
            url=url, headers=headers, bucket=bucket, key=key, expires_at=now + expires
        )

    async def presign_download(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        expires: timedelta = DEFAULT_EXPIRY,
    ) -> str:
        """A GET URL for one object (version), valid for ``expires``."""
        check_key(key)
        return self._minio.presigned_get_object(
            bucket, key, expires=check_expiry(expires), version_id=version_id
        )

    # --- uploads -------------------------------------------------------------------------

    async def upload(
        self,
        path: Path | str,
        user_id: str,
        *,
        bucket: str | None = None,
        key: str | None = None,
        session_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        content_type: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> UploadResult:
        """Upload a local file (multipart above 8 MiB) with its metadata, retrying
        transient failures (MINIO_MAX_RETRIES, MINIO_RETRY_BACKOFF), then verify it: the
        ETag MinIO reports must be the one the local bytes give.

        ``progress`` is called from upload threads; keep it quick and thread-safe.
        """
        check_user_id(user_id)
        path = Path(path)
        size = _regular_file_size(path)
        if size > self.settings.minio_max_file_size:
            raise InvalidInput(
                f"{path}: {size} bytes is over MINIO_MAX_FILE_SIZE "
                f"({self.settings.minio_max_file_size})"
            )
        bucket = await self.require_bucket(bucket or self.settings.minio_audio_bucket_name)
        key = (
            check_key(key)
            if key
            else upload_key(user_id, path.name, now=_now(), unique=secrets.token_hex(6))
        )
        content_type = content_type or content_type_for(path.name)
        stop_hashing = threading.Event()
        try:
            digest = await asyncio.to_thread(digest_file, path, cancelled=stop_hashing)
        except asyncio.CancelledError:  # Ctrl-C while hashing: stop reading at once
            stop_hashing.set()
            raise
        if digest.size != size:
            raise UploadFailed(f"{path}: the file changed while it was read", retriable=True)
        with tracer.start_as_current_span(
            "upload", kind=SpanKind.PRODUCER, attributes=object_attributes(bucket, key, size)
        ) as span:
            meta = self._upload_meta(
                user_id, path.name, session_type, metadata, digest, traceparent_of(span)
            )
            relay = _ProgressRelay(key, size, progress)
            try:
                etag, version_id = await self._retrying(
                    bucket,
                    f"upload {bucket}/{key}",
                    lambda: self._put_file(path, bucket, key, content_type, meta, relay),
                    UploadFailed,
                    operation=None,  # _put_file traces the PutObject itself
                )
            except asyncio.CancelledError:
                # Ctrl-C: the worker thread would otherwise finish the upload; it now stops
                # at its next part and minio-py aborts the multipart upload.
                relay.cancel()
                raise
        if etag != digest.etag:
            raise UploadFailed(
                f"upload {bucket}/{key}: MinIO stored ETag {etag}, the local file gives "
                f"{digest.etag}: the bytes differ"
            )
        return UploadResult(
            bucket=bucket,
            key=key,
            version_id=version_id,
            etag=etag,
            size=size,
            sha256=digest.sha256,
            content_type=content_type,
            metadata=meta,
            multipart=size > UPLOAD_PART_SIZE,
        )

    # --- reading objects ---------------------------------------------------------------

    async def stream(
        self,
        bucket: str,
        key: str,
        *,
        version_id: str | None = None,
        chunk_size: int = _STREAM_CHUNK,
    ) -> AsyncGenerator[bytes, None]:
        """The object's bytes in chunks, without holding it in memory."""
        check_key(key)
        what = f"stream {bucket}/{key}"
        response = await self._call(
            bucket,
            what,
            lambda: self._minio.get_object(bucket, key, version_id=version_id),
            DownloadFailed,
            operation="GetObject",
        )
        try:
            while True:
                chunk = await self._call(
                    bucket, what, lambda: response.read(chunk_size), DownloadFailed, operation=None
                )
                if not chunk:
                    return
                yield chunk
        finally:
            response.close()
            response.release_conn()

    async def download(
        self, bucket: str, key: str, destination: Path, *, version_id: str | None = None
    ) -> Path:
        """Save the object to ``destination`` (written to a part file, then renamed)."""
        check_key(key)
        await self._retrying(
            bucket,
            f"download {bucket}/{key}",
            lambda: self._minio.fget_object(bucket, key, str(destination), version_id=version_id),
            DownloadFailed,
            operation="GetObject",
        )
        return destination

    # --- the index -----------------------------------------------------------------------

    async def list_objects(
        self,
        *,
        bucket: str | None = None,
        user_id: str | None = None,
        prefix: str | None = None,
        status: JobStatus | str | None = None,
        limit: int = 1000,
        include_versions: bool = False,
        after: tuple[str, str, str] | None = None,
    ) -> list[ObjectRecord]:
        """Objects as S3's ListObjectsV2 lists them: the latest version of each key, none
        for a key behind a delete marker. ``include_versions``: every stored version and
        delete marker, like ListObjectVersions (``is_latest``, ``is_delete_marker``).
        Ordered by (bucket, key, version_id); ``after`` continues from a row's triple."""
        store = await self._index()
        return await store.list_objects(
            ObjectQuery(
                bucket=_checked_bucket(bucket),
                user_id=user_id,
                prefix=prefix,
                processing_status=JobStatus(status) if status else None,
                limit=limit,
                after=after,
                versions=Versions.ALL if include_versions else Versions.CURRENT,
            )
        )

    async def search(
        self,
        metadata: Mapping[str, str] | None = None,
        *,
        text: str | None = None,
        bucket: str | None = None,
        limit: int = 1000,
        include_versions: bool = False,
    ) -> list[ObjectRecord]:
        """Live objects whose user metadata has all these values (names case-insensitive)
        and, with ``text``, whose transcript has every word of it (each record then has a
        ``snippet``, hits in [brackets]). Raises InvalidInput without either."""
        if not metadata and text is None:
            raise InvalidInput("search needs metadata criteria, a text, or both")
        store = await self._index()
        return await store.list_objects(
            ObjectQuery(
                bucket=_checked_bucket(bucket),
                metadata=metadata,
                limit=limit,
                versions=Versions.ALL if include_versions else Versions.CURRENT,
                text=text,
            )
        )

    async def get(self, bucket: str, key: str) -> ObjectRecord:
        """The index row of the key's current version (in a versioned bucket too);
        NotFound when the index has none or a delete marker hides the key."""
        store = await self._index()
        record = await self._current(store, bucket, key)
        if record is None:
            raise NotFound(f"{bucket}/{key} is not in the index")
        return record

    async def history(
        self, bucket: str, key: str, *, version_id: str | None = None
    ) -> ObjectHistory:
        """The object's story, oldest first: journaled events (who, when, from where),
        processing jobs and retention decisions (consumer/client/history.py). Raises
        NotFound when the index knows nothing of it."""
        store = await self._index()
        return await load_history(
            store,
            check_bucket(bucket),
            check_key(key),
            load_policies(self.settings),
            version_id=version_id,
        )

    async def usage(self, *, by: Literal["user", "bucket"] = "user") -> list[UsageRow]:
        """Per user or bucket: live objects and bytes (what a listing shows) and stored
        objects and bytes (every version, noncurrent ones included)."""
        store = await self._index()
        return await store.usage(by=by)

    async def wait_indexed(
        self, bucket: str, key: str, *, etag: str | None = None, timeout_s: float = 30.0
    ) -> ObjectRecord:
        """The index row once the object's event has been indexed (with ``etag``, that
        content); NotFound (retriable) after ``timeout_s``."""
        store = await self._index()

        async def indexed() -> ObjectRecord | None:
            record = await self._current(store, bucket, key)
            if record is None or (etag and record.etag != etag):
                return None
            return record

        return await _poll(indexed, timeout_s, f"{bucket}/{key} not indexed")

    async def wait_removed(self, bucket: str, key: str, *, timeout_s: float = 30.0) -> None:
        """Return once the index no longer lists the object (its removal event arrived;
        in a versioned bucket, a delete marker)."""
        store = await self._index()

        async def removed() -> bool | None:
            return True if await self._current(store, bucket, key) is None else None

        await _poll(removed, timeout_s, f"{bucket}/{key} still indexed")

    # --- results ------------------------------------------------------------------------

    async def result(
        self, bucket: str, key: str, processor: str, *, version_id: str | None = None
    ) -> dict[str, Any]:
        """The result document of ``processor`` on the object (its current version, or
        ``version_id``): source, processor, attempt, processed_at and ``result`` — for
        transcribe, ``result["text"]``. NotFound (retriable) while there is none for that
        content yet; NotFound also when the object does not exist."""
        check_bucket(bucket)
        check_key(key)
        etag: str | None = None
        if version_id is None:
            current = await self.stat(bucket, key)
            version_id, etag = current.version_id or "", (current.etag or "").strip('"')
        location = ResultLocation(bucket, key, version_id, processor)
        results = self.settings.minio_results_bucket_name
        try:
            document = await self._read_document(results, result_location_key(location))
        except NotFound:
            raise NotFound(
                f"no {processor} result for {bucket}/{key} yet", retriable=True
            ) from None
        if etag and (document.get("source") or {}).get("etag") not in (None, etag):
            # An unversioned key written again: this result is of the content before.
            raise NotFound(
                f"the {processor} result of {bucket}/{key} is of older content", retriable=True
            )
        return document

    async def wait_processed(
        self,
        bucket: str,
        key: str,
        *,
        processors: Sequence[str] | None = None,
        timeout_s: float = 60.0,
    ) -> list[ProcessedResult]:
        """Every processor's outcome on the object's current content, once each finished:
        done with its result document, or failed with the reason. ``processors`` None:
        the jobs the processing worker started for it (at least one). NotFound
        (retriable) after ``timeout_s``, naming what had not finished."""
        check_bucket(bucket)
        check_key(key)
        store = await self._index()
        wanted = set(processors) if processors is not None else None

        async def finished() -> list[JobRecord] | None:
            record = await self._current(store, bucket, key)
            if record is None:
                return None
            jobs = [
                job
                for job in await store.jobs(bucket=bucket, key=key)
                if job.version_id == record.version_id and job.etag == record.etag
            ]
            if wanted is not None:
                jobs = [job for job in jobs if job.processor in wanted]
                if {job.processor for job in jobs} != wanted:
                    return None
            if not jobs or not all(job.status.finished for job in jobs):
                return None
            return jobs

        what = f"{bucket}/{key} not processed" + (
            f" by {', '.join(sorted(wanted))}" if wanted else ""
        )
        jobs = await _poll(finished, timeout_s, what)
        return [await self._outcome(job) for job in jobs]

    def processed(
        self,
        *,
        bucket: str | None = None,
        key: str | None = None,
        processors: Sequence[str] | None = None,
        group_id: str | None = None,
        from_beginning: bool = False,
    ) -> ProcessedFeed:
        """Results as they are stored, without polling: ``async for done in
        client.processed(...)`` yields a ProcessedResult (``done``, with its document) for
        each new result matching ``bucket`` / ``key`` / ``processors``. The feed reads
        the results bucket's notifications in its own consumer group (``group_id``,
        default KAFKA_RESULTS_GROUP_ID), from where that group left off — on its first
        start from now on, or from the topic's beginning with ``from_beginning``. Use
        ``async with client.processed(...) as feed`` to join before uploading and to
        leave the group at the end. (Failed jobs write no result: see wait_processed.)"""
        wanted = FeedFilter(
            self.settings.minio_results_bucket_name,
            bucket=_checked_bucket(bucket),
            key=check_key(key) if key is not None else None,
            processors=processors_filter(processors),
        )
        return ProcessedFeed(
            self.settings,
            wanted,
            self._read_document,
            group_id=group_id,
            from_beginning=from_beginning,
        )

    async def _current(self, store: IndexStore, bucket: str, key: str) -> ObjectRecord | None:
        """The index row of the key's current version (None: none, or a delete marker)."""
        rows = await store.list_objects(
            ObjectQuery(bucket=bucket, prefix=key, limit=1, versions=Versions.CURRENT)
        )
        # Byte order puts the key itself before any longer key it is a prefix of.
        return rows[0] if rows and rows[0].key == key else None

    async def _outcome(self, job: JobRecord) -> ProcessedResult:
        if job.status is not JobStatus.DONE or not job.result_bucket or not job.result_key:
            return ProcessedResult(
                job.bucket, job.key, job.version_id, job.processor, "failed", error=job.last_error
            )
        document = await self._read_document(job.result_bucket, job.result_key)
        return ProcessedResult(
            job.bucket,
            job.key,
            job.version_id,
            job.processor,
            "done",
            document=document,
            result_key=job.result_key,
        )

    async def _read_document(self, bucket: str, key: str) -> dict[str, Any]:
        """A JSON document from the bucket; NotFound, DownloadFailed (not JSON)."""

        def read() -> bytes:
            response = self._minio.get_object(bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        body = await self._retrying(
            bucket, f"read {bucket}/{key}", read, DownloadFailed, operation="GetObject"
        )
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise DownloadFailed(f"{bucket}/{key} is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise DownloadFailed(f"{bucket}/{key} is not a JSON object")
        return document

    # --- deletes ------------------------------------------------------------------------

    async def delete(
        self, bucket: str, keys: str | Sequence[str], *, version_id: str | None = None
    ) -> list[DeleteResult]:
        """Delete objects (one multi-object request per 1000); the index follows through
        the removal events. Each key's outcome is reported: deleted, absent, failed."""
        names = [keys] if isinstance(keys, str) else list(keys)
        if not names:
            raise InvalidInput("nothing to delete: give at least one key")
        if version_id is not None and len(names) != 1:
            raise InvalidInput("a version id applies to exactly one key")
        for name in names:
            check_key(name)
        await self.require_bucket(bucket)
        present = await asyncio.gather(*(self._exists(bucket, n, version_id) for n in names))
        results = {
            name: DeleteResult(bucket, name, version_id, "absent")
            for name, exists in zip(names, present, strict=True)
            if not exists
        }
        doomed = [name for name, exists in zip(names, present, strict=True) if exists]
        failed = await self.remove_versions(bucket, [DeleteObject(n, version_id) for n in doomed])
        for name in doomed:
            error = failed.get(name)
            outcome: Literal["deleted", "failed"] = "failed" if error else "deleted"
            results[name] = DeleteResult(bucket, name, version_id, outcome, error)
        return [results[name] for name in names]

    async def remove_versions(self, bucket: str, objects: Sequence[DeleteObject]) -> dict[str, str]:
        """Multi-object deletes (1000 per request) of exact keys or versions; returns the
        refused ones, key → "Code: message"."""
        refused: dict[str, str] = {}
        for start in range(0, len(objects), 1000):
            chunk = list(objects[start : start + 1000])
            errors = await self._call(
                bucket,
                f"delete {len(chunk)} objects in {bucket}",
                lambda chunk=chunk: list(self._minio.remove_objects(bucket, chunk)),  # type: ignore[misc]
                ConsumerError,
                operation="DeleteObjects",
            )
            refused.update({error.name or "": f"{error.code}: {error.message}" for error in errors})
        return refused

    async def stat(self, bucket: str, key: str, *, version_id: str | None = None) -> Object:
        """MinIO's view of one object (HEAD): size, etag, version, metadata. NotFound."""
        check_key(key)
        return await self._call(
            bucket,
            f"stat {bucket}/{key}",
            lambda: self._minio.stat_object(bucket, key, version_id=version_id),
            DownloadFailed,
            operation="HeadObject",
            expected_not_found=True,
        )

    # --- health ---------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """The running consumer's /status report, or one built here (see `status`)."""
        from consumer.health import fetch_or_build_status
        from consumer.setup.notify_config import notify_target_id

        settings = self.settings
        return await fetch_or_build_status(settings, lambda: notify_target_id(settings))

    # --- internals ------------------------------------------------------------------------

    def _new_upload(
        self,
        user_id: str,
        file_name: str,
        content_type: str | None,
        session_type: str | None,
        metadata: Mapping[str, str] | None,
        traceparent: str | None,
    ) -> tuple[str, str, str, dict[str, str]]:
        key = upload_key(user_id, file_name, now=_now(), unique=secrets.token_hex(6))
        meta = upload_metadata(
            user_id,
            original_name=file_name,
            session_type=session_type,
            # The caller's trace continues through the upload's event (see telemetry).
            traceparent=traceparent or traceparent_of(trace.get_current_span()),
            extra=metadata,
        )
        return (
            self.settings.minio_audio_bucket_name,
            key,
            content_type or content_type_for(file_name),
            meta,
        )

    def _upload_meta(
        self,
        user_id: str,
        file_name: str,
        session_type: str | None,
        metadata: Mapping[str, str] | None,
        digest: FileDigest,
        traceparent: str | None,
    ) -> dict[str, str]:
        meta = upload_metadata(
            user_id,
            original_name=file_name,
            session_type=session_type,
            traceparent=traceparent,
            extra=metadata,
        )
        meta[SHA256] = digest.sha256
        return meta

    def _size_limit(self, max_size: int | None) -> int:
        limit = self.settings.minio_max_file_size
        if max_size is not None:
            if not 1 <= max_size <= limit:
                raise InvalidInput(f"max size must be between 1 and MINIO_MAX_FILE_SIZE ({limit})")
            limit = max_size
        return limit

    def _base_url(self) -> str:
        scheme = "https" if self.settings.minio_use_ssl else "http"
        return (
            f"{scheme}://{host_header(self.settings.minio_endpoint, self.settings.minio_use_ssl)}"
        )

    def _put_file(
        self,
        path: Path,
        bucket: str,
        key: str,
        content_type: str,
        metadata: dict[str, str],
        relay: _ProgressRelay,
    ) -> tuple[str, str | None]:
        with minio_operation("PutObject", bucket, key):
            result = self._minio.fput_object(
                bucket,
                key,
                str(path),
                content_type=content_type,
                metadata=metadata,  # type: ignore[arg-type]
                progress=relay,
                part_size=UPLOAD_PART_SIZE,
                # One part at a time: minio-py reports progress as it reads a part, so
                # parallel parts would run the bar ahead of what MinIO has received.
                num_parallel_uploads=1,
            )
        return (result.etag or "").strip('"'), result.version_id

    async def _exists(self, bucket: str, key: str, version_id: str | None) -> bool:
        try:
            await self.stat(bucket, key, version_id=version_id)
        except NotFound:
            return False
        return True

    async def require_bucket(self, bucket: str) -> str:
        """``bucket`` if it exists; InvalidInput naming it otherwise (a malformed name
        included: ``user_5/x.ogg`` without ``--bucket`` names no bucket), so that a wrong
        bucket is refused before any byte is sent or any key reported absent."""
        check_bucket(bucket)

        def exists_or_unknowable() -> bool:
            try:
                return self._minio.bucket_exists(bucket)
            except MINIO_ERRORS as exc:
                if (
                    classify_failure(exc).code == "AccessDenied"
                ):  # least privilege: let the call say
                    return True
                raise

        exists = await self._retrying(  # through an outage, like the upload itself
            bucket,
            f"check bucket {bucket}",
            exists_or_unknowable,
            UploadFailed,
            operation="HeadBucket",
        )
        if not exists:
            raise InvalidInput(f"no bucket named {bucket!r}")
        return bucket

    async def _call(
        self,
        bucket: str,
        what: str,
        call: Callable[[], T],
        failure: type[ConsumerError],
        *,
        operation: str | None,
        expected_not_found: bool = False,
    ) -> T:
        """One MinIO call in a worker thread, traced and timed as ``operation`` (None: the
        call does it itself), its errors translated."""
        return await minio_call(
            self._traced(bucket, call, operation, expected_not_found),
            what=what,
            settings=self.settings,
            error=failure,
        )

    async def _retrying(
        self,
        bucket: str,
        what: str,
        call: Callable[[], T],
        failure: type[ConsumerError],
        *,
        operation: str | None,
    ) -> T:
        """``_call`` retried on retriable errors (MINIO_MAX_RETRIES, MINIO_RETRY_BACKOFF)."""
        return await minio_call(
            self._traced(bucket, call, operation),
            what=what,
            settings=self.settings,
            error=failure,
            retrying=True,
        )

    @staticmethod
    def _traced(
        bucket: str, call: Callable[[], T], operation: str | None, expected_gone: bool = False
    ) -> Callable[[], T]:
        """``call`` in a span timed as ``operation`` (None: the call does it itself); with
        ``expected_gone``, a "not there" answer counts as a success."""
        if operation is None:
            return call

        def traced() -> T:
            expected = is_gone if expected_gone else lambda _: False
            with minio_operation(operation, bucket, expected=expected):
                return call()

        return traced

    async def _index(self) -> IndexStore:
        async with self._store_lock:
            if self._store is None:
                store = open_index(
                    self.settings.index_url,
                    command_timeout_s=self.settings.index_command_timeout_s,
                )
                await store.start()
                self._store = store
            return self._store


async def _poll(check: Callable[[], Awaitable[T | None]], timeout_s: float, what: str) -> T:
    deadline = asyncio.get_running_loop().time() + timeout_s
    delay = 0.05
    while True:
        result = await check()
        if result is not None:
            return result
        if asyncio.get_running_loop().time() >= deadline:
            raise NotFound(f"{what} after {timeout_s:g} s", retriable=True)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _checked_bucket(bucket: str | None) -> str | None:
    return check_bucket(bucket) if bucket is not None else None


def _regular_file_size(path: Path) -> int:
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror}") from None
    if not path.is_file():
        raise InvalidInput(f"{path}: not a regular file")
    return stat.st_size


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "DeleteResult",
    "ProcessedFeed",
    "ProcessedResult",
    "ProgressCallback",
    "UploadProgress",
    "UploadResult",
    "VoxClient",
    "minio_failure",
]
