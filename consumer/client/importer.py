"""``import DIR --user U``: migrate local recordings into the bucket, resumable, reversible.

Every file goes to a deterministic key, ``user_<id>/import-<import id>/<relative path>``,
with the user's metadata and its SHA-256, and is verified after the upload (size, the
ETag MinIO computed from the bytes, the SHA-256 in its metadata). Each verified file is
appended to a manifest (JSON lines, fsynced) before the next one starts, so:

- an interrupted import, run again with the same manifest, skips what is recorded and
  adopts a file that reached MinIO just before the interruption (same key, same SHA-256);
- ``import --rollback MANIFEST`` deletes exactly the object versions recorded there, and
  keeps any that were overwritten since (their ETag differs).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from minio.deleteobjects import DeleteObject

from consumer.client.api import UploadResult, VoxClient
from consumer.client.files import digest_file
from consumer.errors import ConsumerError, InvalidInput, NotFound
from consumer.names import SHA256, check_user_id, import_key

DEFAULT_MANIFEST_NAME: Final = ".voxpersona-import.jsonl"
_FORMAT: Final = 1

ImportOutcome = Literal["uploaded", "adopted", "skipped", "failed"]
RollbackOutcome = Literal["deleted", "gone", "changed", "failed"]


@dataclass(frozen=True)
class ImportHeader:
    import_id: str
    directory: str
    user_id: str
    bucket: str
    started_at: str
    format: int = _FORMAT


@dataclass(frozen=True)
class ImportedFile:
    path: str  # relative to the imported directory, with "/"
    size: int
    sha256: str
    bucket: str
    key: str
    etag: str
    version_id: str | None
    imported_at: str


@dataclass(frozen=True)
class ImportItem:
    path: str
    outcome: ImportOutcome
    size: int
    key: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImportReport:
    import_id: str
    manifest: str
    counts: dict[str, int] = field(default_factory=dict)
    bytes_uploaded: int = 0

    def add(self, item: ImportItem) -> None:
        self.counts[item.outcome] = self.counts.get(item.outcome, 0) + 1
        if item.outcome == "uploaded":
            self.bytes_uploaded += item.size

    @property
    def failed(self) -> int:
        return self.counts.get("failed", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "manifest": self.manifest,
            **{
                name: self.counts.get(name, 0)
                for name in ("uploaded", "adopted", "skipped", "failed")
            },
            "bytes_uploaded": self.bytes_uploaded,
        }


@dataclass(frozen=True)
class RollbackItem:
    path: str
    bucket: str
    key: str
    version_id: str | None
    outcome: RollbackOutcome
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- the manifest (pure parsing + small file I/O) -----------------------------------------


@dataclass
class Manifest:
    path: Path
    header: ImportHeader
    files: dict[str, ImportedFile]

    def record(self, entry: ImportedFile) -> None:
        """Append one verified file; on disk before the next upload starts."""
        _append_line(self.path, {"type": "file", **asdict(entry)})
        self.files[entry.path] = entry


def parse_manifest(
    lines: Iterator[str], source: str
) -> tuple[ImportHeader, dict[str, ImportedFile]]:
    """The header and the recorded files (the last record of a path wins). A torn last
    line (the process died while writing it) is ignored; anything else malformed is an
    InvalidInput naming the line."""
    header: ImportHeader | None = None
    files: dict[str, ImportedFile] = {}
    pending_error: str | None = None
    for number, line in enumerate(lines, start=1):
        if pending_error:
            raise InvalidInput(pending_error)
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            kind = data.pop("type")
            if kind == "import":
                header = ImportHeader(**data)
            elif kind == "file":
                entry = ImportedFile(**data)
                files[entry.path] = entry
        except (ValueError, TypeError, KeyError, AttributeError):
            pending_error = f"{source}: line {number} is not a manifest record"
    if header is None:
        raise InvalidInput(f"{source}: not an import manifest (no header line)")
    if header.format != _FORMAT:
        raise InvalidInput(f"{source}: manifest format {header.format} is not supported")
    return header, files


def load_manifest(path: Path) -> Manifest:
    try:
        with path.open(encoding="utf-8") as handle:
            header, files = parse_manifest(iter(handle), str(path))
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such manifest") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: not an import manifest (not UTF-8 text)") from None
    return Manifest(path, header, files)


def open_manifest(path: Path, directory: Path, user_id: str, bucket: str) -> Manifest:
    """The manifest to continue (same directory, user and bucket) or a new one."""
    if path.exists():
        manifest = load_manifest(path)
        header = manifest.header
        if (header.directory, header.user_id, header.bucket) != (str(directory), user_id, bucket):
            raise InvalidInput(
                f"{path} belongs to the import of {header.directory} for user {header.user_id}"
                f" into {header.bucket}; pass another --manifest"
            )
        return manifest
    header = ImportHeader(
        import_id=secrets.token_hex(4),
        directory=str(directory),
        user_id=user_id,
        bucket=bucket,
        started_at=datetime.now(UTC).isoformat(),
    )
    try:
        _append_line(path, {"type": "import", **asdict(header)})
    except OSError as exc:
        raise InvalidInput(
            f"cannot write the manifest {path}: {exc.strerror}; pass --manifest"
        ) from None
    return Manifest(path, header, {})


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def files_to_import(directory: Path, manifest_path: Path) -> list[tuple[str, Path]]:
    """Regular files under ``directory`` (sorted, relative paths with "/"), leaving out
    hidden files and directories and the manifest itself."""
    if not directory.is_dir():
        raise InvalidInput(f"{directory}: not a directory")
    found: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or path == manifest_path or not path.is_file():
                continue
            found.append((path.relative_to(directory).as_posix(), path))
    return found


# --- import and rollback ------------------------------------------------------------------


async def run_import(
    client: VoxClient,
    directory: Path,
    user_id: str,
    *,
    bucket: str | None = None,
    manifest_path: Path | None = None,
    session_type: str | None = None,
    metadata: Mapping[str, str] | None = None,
    on_item: Callable[[ImportItem], None] = lambda _: None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ImportReport:
    """Import every file of ``directory`` for ``user_id``; one ``on_item`` per file."""
    check_user_id(user_id)
    manifest, files = await asyncio.to_thread(
        _prepare,
        directory,
        user_id,
        bucket or client.settings.minio_audio_bucket_name,
        manifest_path,
    )
    report = ImportReport(manifest.header.import_id, str(manifest.path))
    for relative, path in files:
        item = await _import_one(
            client, manifest, relative, path, session_type, metadata, on_progress
        )
        report.add(item)
        on_item(item)
    return report


def _prepare(
    directory: Path, user_id: str, bucket: str, manifest_path: Path | None
) -> tuple[Manifest, list[tuple[str, Path]]]:
    directory = directory.resolve()
    manifest_path = (manifest_path or directory / DEFAULT_MANIFEST_NAME).resolve()
    files = files_to_import(directory, manifest_path)
    return open_manifest(manifest_path, directory, user_id, bucket), files


async def _import_one(
    client: VoxClient,
    manifest: Manifest,
    relative: str,
    path: Path,
    session_type: str | None,
    metadata: Mapping[str, str] | None,
    on_progress: Callable[[str, int, int], None] | None,
) -> ImportItem:
    header = manifest.header
    try:
        key = import_key(header.user_id, header.import_id, relative)
        digest = await asyncio.to_thread(digest_file, path)
        done = manifest.files.get(relative)
        if done is not None and (done.size, done.sha256) == (digest.size, digest.sha256):
            return ImportItem(relative, "skipped", digest.size, done.key)
        adopted = await _already_there(client, header.bucket, key, digest.sha256, digest.size)
        if adopted is not None:
            etag, version_id, outcome = adopted[0], adopted[1], "adopted"
        else:
            result: UploadResult = await client.upload(
                path,
                header.user_id,
                bucket=header.bucket,
                key=key,
                session_type=session_type,
                metadata={**(metadata or {}), "import-id": header.import_id},
                progress=(lambda p: on_progress(relative, p.bytes_sent, p.total_bytes))
                if on_progress
                else None,
            )
            etag, version_id, outcome = result.etag, result.version_id, "uploaded"
        await asyncio.to_thread(
            manifest.record,
            ImportedFile(
                path=relative,
                size=digest.size,
                sha256=digest.sha256,
                bucket=header.bucket,
                key=key,
                etag=etag,
                version_id=version_id,
                imported_at=datetime.now(UTC).isoformat(),
            ),
        )
        return ImportItem(relative, outcome, digest.size, key)  # type: ignore[arg-type]
    except (ConsumerError, OSError) as exc:
        message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ImportItem(relative, "failed", 0, error=message)


async def _already_there(
    client: VoxClient, bucket: str, key: str, sha256: str, size: int
) -> tuple[str, str | None] | None:
    """(etag, version) of an object an interrupted run uploaded but did not record."""
    try:
        stat = await client.stat(bucket, key)
    except NotFound:
        return None
    if stat.size == size and (stat.metadata or {}).get(f"x-amz-meta-{SHA256}") == sha256:
        return (stat.etag or "").strip('"'), stat.version_id
    return None


async def rollback_import(
    client: VoxClient,
    manifest_path: Path,
    *,
    on_item: Callable[[RollbackItem], None] = lambda _: None,
) -> list[RollbackItem]:
    """Delete exactly the object versions the manifest records, unless changed since."""
    manifest = await asyncio.to_thread(load_manifest, manifest_path)
    items: list[RollbackItem] = []
    for entry in manifest.files.values():
        item = await _rollback_one(client, entry)
        items.append(item)
        on_item(item)
    return items


async def _rollback_one(client: VoxClient, entry: ImportedFile) -> RollbackItem:
    def item(outcome: RollbackOutcome, error: str | None = None) -> RollbackItem:
        return RollbackItem(entry.path, entry.bucket, entry.key, entry.version_id, outcome, error)

    try:
        stat = await client.stat(entry.bucket, entry.key, version_id=entry.version_id)
    except NotFound:
        return item("gone")
    except ConsumerError as exc:
        return item("failed", str(exc))
    if (stat.etag or "").strip('"') != entry.etag:
        return item("changed", "overwritten since the import; kept")
    try:
        errors = await client.remove_versions(
            entry.bucket, [DeleteObject(entry.key, entry.version_id)]
        )
    except ConsumerError as exc:
        return item("failed", str(exc))
    return item("failed", next(iter(errors.values()))) if errors else item("deleted")
