"""The client's verbs: upload, presign, delete, import, download, stat, cat, result.

Each handler takes the parsed arguments and the settings, prints results (``--json``: one
JSON object per line on stdout; progress and summaries on stderr) and returns the exit
code: 0 all done, 1 something failed at run time. Bad input raises InvalidInput (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from minio.datatypes import Object

from consumer.cli.common import (
    add_display,
    add_json,
    duration,
    emit,
    note,
    print_table,
    shows_progress,
    split_bucket_key,
    traced,
    with_client,
)
from consumer.cli.exit_codes import ExitCode
from consumer.cli.output import human_bytes, json_lines
from consumer.cli.progress import ProgressBar
from consumer.client.api import VoxClient
from consumer.client.importer import (
    DEFAULT_MANIFEST_NAME,
    ImportItem,
    RollbackItem,
    rollback_import,
    run_import,
)
from consumer.client.presign import DEFAULT_EXPIRY
from consumer.errors import ConsumerError, InvalidInput, NotFound
from consumer.names import parse_metadata_options
from consumer.results import ProcessedResult
from consumer.settings import Settings

_META_PREFIX = "x-amz-meta-"


def add_client_verbs(verbs: argparse._SubParsersAction[Any]) -> None:
    _add_upload_presign(verbs)
    _add_read_verbs(verbs)

    delete = verbs.add_parser("delete", help="delete objects (the index follows their events)")
    delete.add_argument("targets", nargs="+", metavar="BUCKET/KEY")
    delete.add_argument("--bucket", help="the bucket of every KEY (then give bare keys)")
    delete.add_argument("--version-id", help="delete this version (one key only)")
    delete.add_argument("--wait", action="store_true", help="return once the index dropped them")
    add_json(delete, "one JSON object per key")
    delete.set_defaults(handler=cmd_delete)

    migrate = verbs.add_parser(
        "import", help="migrate a directory of files (resumable; --rollback MANIFEST undoes)"
    )
    migrate.add_argument("directory", nargs="?", type=Path, metavar="DIR")
    _add_owner(migrate, required=False)
    migrate.add_argument("--bucket", help="default: MINIO_AUDIO_BUCKET_NAME")
    migrate.add_argument("--manifest", type=Path, help=f"default: DIR/{DEFAULT_MANIFEST_NAME}")
    migrate.add_argument("--rollback", type=Path, metavar="MANIFEST", help="undo that import")
    add_json(migrate, "one JSON object per file")
    add_display(migrate)
    migrate.set_defaults(handler=cmd_import)

    result = verbs.add_parser(
        "result", help="the processors' results of BUCKET/KEY (the transcript), or why not"
    )
    result.add_argument("target", metavar="BUCKET/KEY")
    result.add_argument("--processor", help="only this processor's result (e.g. transcribe)")
    result.add_argument(
        "--wait", type=duration, metavar="DURATION", help="wait until processed, e.g. 60s"
    )
    add_json(result, "one JSON object per processor")
    result.set_defaults(handler=cmd_result)


def _add_upload_presign(verbs: argparse._SubParsersAction[Any]) -> None:
    upload = verbs.add_parser("upload", help="upload files with metadata (multipart, retries)")
    upload.add_argument("files", nargs="+", metavar="FILE", type=Path)
    _add_owner(upload, required=True)
    upload.add_argument("--bucket", help="default: MINIO_AUDIO_BUCKET_NAME")
    add_json(upload, "one JSON object per file")
    add_display(upload)
    upload.set_defaults(handler=cmd_upload)

    presign = verbs.add_parser("presign", help="presigned upload (POST policy or PUT) or download")
    kinds = presign.add_subparsers(
        dest="presign_kind", required=True, metavar="upload|download", parser_class=type(presign)
    )
    up = kinds.add_parser("upload", help="a POST policy (or --put URL) for one new object")
    up.add_argument("--name", required=True, help="the file's original name (kept in metadata)")
    _add_owner(up, required=True)
    up.add_argument("--content-type", help="default: from the name's extension")
    up.add_argument("--max-size", type=int, help="bytes; at most MINIO_MAX_FILE_SIZE (default)")
    up.add_argument("--put", action="store_true", help="a PUT URL with signed headers instead")
    up.add_argument("--expires", type=duration, default=DEFAULT_EXPIRY, help="e.g. 15m, 1h")
    add_json(up, "the request as one JSON object")
    up.set_defaults(handler=cmd_presign)
    down = kinds.add_parser("download", help="a GET URL for BUCKET/KEY (or KEY --bucket B)")
    _add_target(down)
    down.add_argument("--expires", type=duration, default=DEFAULT_EXPIRY, help="e.g. 15m, 1h")
    add_json(down, "the URL as one JSON object")
    down.set_defaults(handler=cmd_presign)


def _add_read_verbs(verbs: argparse._SubParsersAction[Any]) -> None:
    download = verbs.add_parser("download", help="save BUCKET/KEY to a local file")
    _add_target(download)
    download.add_argument(
        "--output", "-o", type=Path, metavar="PATH", help="default: the key's file name, here"
    )
    download.add_argument("--force", action="store_true", help="replace an existing file")
    add_json(download, "what was saved, as one JSON object")
    add_display(download)
    download.set_defaults(handler=cmd_download)

    stat = verbs.add_parser("stat", help="MinIO's view of BUCKET/KEY: size, etag, metadata")
    _add_target(stat)
    add_json(stat, "the object as one JSON object")
    stat.set_defaults(handler=cmd_stat)

    cat = verbs.add_parser("cat", help="write BUCKET/KEY's bytes to stdout")
    _add_target(cat)
    cat.set_defaults(handler=cmd_cat)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="BUCKET/KEY")
    parser.add_argument("--bucket", help="the bucket (then give a bare KEY)")
    parser.add_argument("--version-id", help="this version instead of the current one")


def _add_owner(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--user", required=required, help="the owning user id")
    parser.add_argument("--session-type", help="stored as metadata session-type")
    parser.add_argument("--meta", action="append", metavar="KEY=VALUE", help="more metadata")


# --- upload, presign, delete -------------------------------------------------------------


@traced("upload", object_roots=True)
def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    metadata = parse_metadata_options(args.meta)
    for path in args.files:
        if not path.is_file():
            raise InvalidInput(f"{path}: not a regular file")

    async def upload_all(client: VoxClient) -> int:
        failures = 0
        for path in args.files:
            bar = ProgressBar(path.name, path.stat().st_size, enabled=shows_progress(args))
            bar.status("reading it for its checksums…")
            try:
                result = await client.upload(
                    path,
                    args.user,
                    bucket=args.bucket,
                    session_type=args.session_type,
                    metadata=metadata,
                    progress=lambda p, bar=bar: bar.update(p.bytes_sent),  # type: ignore[misc]
                )
            except InvalidInput:
                raise
            except ConsumerError as exc:
                bar.finish(f"  failed: {exc}")
                if args.json:
                    emit({"file": str(path), "outcome": "failed", "error": str(exc)})
                elif not shows_progress(args):  # no bar to say it
                    print(f"{path}: failed: {exc}", file=sys.stderr)
                failures += 1
                continue
            bar.finish()
            if args.json:
                emit({"file": str(path), "outcome": "uploaded", **result.as_dict()})
            else:
                print(
                    f"{result.bucket}/{result.key}  {human_bytes(result.size)}  etag {result.etag}"
                )
        return ExitCode.FAILURE if failures else ExitCode.OK

    return with_client(settings, upload_all)


@traced("presign")
def cmd_presign(args: argparse.Namespace, settings: Settings) -> int:
    async def presign(client: VoxClient) -> dict[str, Any]:
        if args.presign_kind == "download":
            bucket, key = split_bucket_key(args.target, args.bucket)
            url = await client.presign_download(
                bucket, key, version_id=args.version_id, expires=args.expires
            )
            return {"method": "GET", "url": url, "bucket": bucket, "key": key}
        options: dict[str, Any] = {
            "content_type": args.content_type,
            "session_type": args.session_type,
            "metadata": parse_metadata_options(args.meta),
            "expires": args.expires,
        }
        if args.put:
            if args.max_size is not None:
                raise InvalidInput("--max-size needs a POST policy; a PUT URL cannot bound size")
            return (await client.presign_put(args.user, args.name, **options)).as_dict()
        post = await client.presign_upload(args.user, args.name, max_size=args.max_size, **options)
        return post.as_dict()

    async def call(client: VoxClient) -> int:
        request = await presign(client)
        if args.json:
            print(json.dumps(request, ensure_ascii=False))
        else:
            _print_request(request)
        return ExitCode.OK

    return with_client(settings, call)


def _print_request(request: dict[str, Any]) -> None:
    if request["method"] == "GET":
        # The bare URL, so that `curl "$(python -m consumer presign download …)"` works.
        print(request["url"])
    else:
        print(f"{request['method']} {request['url']}")
    for name, value in {**request.get("fields", {}), **request.get("headers", {})}.items():
        print(f"  {name}: {value}")
    if "key" in request:
        print(f"object: {request['bucket']}/{request['key']}", file=sys.stderr)


@traced("delete")
def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    targets = [split_bucket_key(target, args.bucket) for target in args.targets]
    buckets = {bucket for bucket, _ in targets}

    async def delete(client: VoxClient) -> int:
        rows: list[dict[str, Any]] = []
        for bucket in sorted(buckets):
            keys = [key for b, key in targets if b == bucket]
            for result in await client.delete(bucket, keys, version_id=args.version_id):
                if args.wait and result.outcome == "deleted" and not args.version_id:
                    await client.wait_removed(bucket, result.key)
                rows.append(result.as_dict())
        if args.json:
            sys.stdout.write(json_lines(rows))
        else:
            print_table(rows, ("bucket", "key", "version_id", "outcome", "error"))
        return ExitCode.FAILURE if any(row["outcome"] == "failed" for row in rows) else ExitCode.OK

    return with_client(settings, delete)


# --- download, stat, cat -----------------------------------------------------------------


def stat_fields(obj: Object) -> dict[str, Any]:
    """MinIO's HEAD of one object as the `stat --json` line. Pure."""
    headers: Mapping[str, str] = obj.metadata or {}
    metadata = {
        name.lower().removeprefix(_META_PREFIX): value
        for name, value in headers.items()
        if name.lower().startswith(_META_PREFIX)
    }
    return {
        "bucket": obj.bucket_name,
        "key": obj.object_name,
        "version_id": obj.version_id,
        "size": obj.size,
        "etag": obj.etag,
        "content_type": obj.content_type,
        "last_modified": obj.last_modified.isoformat() if obj.last_modified else None,
        "metadata": dict(sorted(metadata.items())),
    }


def cmd_stat(args: argparse.Namespace, settings: Settings) -> int:
    bucket, key = split_bucket_key(args.target, args.bucket)

    async def stat(client: VoxClient) -> int:
        await client.require_bucket(bucket)
        fields = stat_fields(await client.stat(bucket, key, version_id=args.version_id))
        if args.json:
            emit(fields)
        else:
            shown = {**fields, "size": f"{fields['size']} ({human_bytes(fields['size'])})"}
            width = max(len(name) for name in shown)
            for name, value in shown.items():
                if name == "metadata":
                    for meta, text in value.items():
                        print(f"{('meta ' + meta).ljust(width)}  {text}")
                else:
                    print(f"{name.ljust(width)}  {'-' if value is None else value}")
        return ExitCode.OK

    return with_client(settings, stat)


def download_path(key: str, output: Path | None) -> Path:
    """Where ``download`` saves ``key``: ``output`` (into it when a directory), else the
    key's file name in the current directory. Pure but for the is_dir check."""
    name = key.rsplit("/", 1)[-1]
    if output is not None and not output.is_dir():
        return output
    if not name or name in (".", ".."):
        raise InvalidInput(f"{key!r} names no file; give --output PATH")
    return (output or Path()) / name


@traced("download")
def cmd_download(args: argparse.Namespace, settings: Settings) -> int:
    bucket, key = split_bucket_key(args.target, args.bucket)
    destination = download_path(key, args.output)
    if destination.exists() and not args.force:
        raise InvalidInput(f"{destination} exists; --force replaces it")
    if not destination.parent.is_dir():
        raise InvalidInput(f"{destination.parent}: no such directory")

    async def download(client: VoxClient) -> int:
        await client.require_bucket(bucket)
        head = await client.stat(bucket, key, version_id=args.version_id)
        bar = ProgressBar(destination.name, head.size or 0, enabled=shows_progress(args))
        # A part file next to the destination, renamed once complete: an interrupted or
        # failed download never leaves a truncated file under the real name.
        part = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed or removed below
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part", delete=False
        )
        done = 0
        try:
            with part:
                async for chunk in client.stream(bucket, key, version_id=head.version_id):
                    await asyncio.to_thread(part.write, chunk)
                    done += len(chunk)
                    bar.update(done)
            os.replace(part.name, destination)
        except BaseException as exc:  # Ctrl-C included: no part file left behind
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part.name)
            if isinstance(exc, ConsumerError):
                bar.finish(f"  failed: {exc}")
            raise
        bar.finish()
        row = {**stat_fields(head), "path": str(destination)}
        if args.json:
            emit(row)
        else:
            note(args, f"{bucket}/{key} → {destination}  {human_bytes(done)}")
        return ExitCode.OK

    return with_client(settings, download)


def cmd_cat(args: argparse.Namespace, settings: Settings) -> int:
    bucket, key = split_bucket_key(args.target, args.bucket)

    async def cat(client: VoxClient) -> int:
        await client.require_bucket(bucket)
        head = await client.stat(bucket, key, version_id=args.version_id)
        if sys.stdout.isatty() and not _is_text(head.content_type):
            raise InvalidInput(
                f"{bucket}/{key} is {head.content_type or 'binary'}: not written to a terminal"
                " (redirect stdout, or use download)"
            )
        out = sys.stdout.buffer
        async for chunk in client.stream(bucket, key, version_id=head.version_id):
            out.write(chunk)
        out.flush()
        return ExitCode.OK

    return with_client(settings, cat)


def _is_text(content_type: str | None) -> bool:
    kind = (content_type or "").split(";")[0].strip().lower()
    return kind.startswith("text/") or kind in ("application/json", "application/x-ndjson")


# --- import ------------------------------------------------------------------------------


@traced("import", object_roots=True)
def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    if args.rollback:
        if args.directory or args.user:
            raise InvalidInput("--rollback MANIFEST takes no DIR and no --user")
        return with_client(settings, lambda client: _rollback(client, args))
    if args.directory is None or args.user is None:
        raise InvalidInput("import needs DIR and --user (or --rollback MANIFEST)")
    metadata = parse_metadata_options(args.meta)
    return with_client(settings, lambda client: _migrate(client, args, metadata))


async def _migrate(client: VoxClient, args: argparse.Namespace, metadata: dict[str, str]) -> int:
    bars: dict[str, ProgressBar] = {}

    def progress(path: str, sent: int, total: int) -> None:
        bar = bars.setdefault(path, ProgressBar(path, total, enabled=shows_progress(args)))
        bar.update(sent)

    def show(item: ImportItem) -> None:
        bar = bars.pop(item.path, None)
        if bar is not None:
            bar.finish("" if item.outcome != "failed" else f"  failed: {item.error}")
        if args.json:
            emit(item.as_dict())
        elif item.outcome != "uploaded" or bar is None or not shows_progress(args):
            detail = f": {item.error}" if item.error else ""
            print(f"{item.outcome:<8} {item.path}{detail}")

    report = await run_import(
        client,
        args.directory,
        args.user,
        bucket=args.bucket,
        manifest_path=args.manifest,
        session_type=args.session_type,
        metadata=metadata,
        on_item=show,
        on_progress=progress,
    )
    summary = report.as_dict()
    if args.json:
        emit({"summary": summary})
    note(
        args,
        "import {import_id}: uploaded={uploaded} adopted={adopted} skipped={skipped} "
        "failed={failed} bytes={bytes_uploaded}; manifest {manifest}".format(**summary),
    )
    return ExitCode.FAILURE if report.failed else ExitCode.OK


async def _rollback(client: VoxClient, args: argparse.Namespace) -> int:
    def show(item: RollbackItem) -> None:
        if args.json:
            emit(item.as_dict())
        else:
            detail = f": {item.error}" if item.error else ""
            print(f"{item.outcome:<8} {item.bucket}/{item.key}{detail}")

    items = await rollback_import(client, args.rollback, on_item=show)
    counts = {
        name: sum(1 for i in items if i.outcome == name)
        for name in ("deleted", "gone", "changed", "failed")
    }
    note(args, "rollback: " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return ExitCode.FAILURE if counts["failed"] else ExitCode.OK


# --- result ------------------------------------------------------------------------------


def outcome_line(outcome: ProcessedResult) -> str:
    """One processor's outcome on one line: the transcript, the result, or the reason."""
    if outcome.status == "failed":
        detail = outcome.error or "(no reason recorded)"
    elif outcome.text is not None:
        detail = outcome.text
    else:
        detail = json.dumps(outcome.result, ensure_ascii=False, sort_keys=True)
    return f"{outcome.processor:<12} {outcome.status:<6} {' '.join(detail.split())}\n"


def cmd_result(args: argparse.Namespace, settings: Settings) -> int:
    """Each processor's outcome on the object's current content. Without ``--wait``
    what is known now; with it, once every job finished. Exit 0 when every outcome is
    done, 1 when one failed or nothing finished in time."""
    bucket, key = split_bucket_key(args.target, None)
    timeout_s = args.wait.total_seconds() if args.wait else 0.0
    processors = [args.processor] if args.processor else None

    async def fetch(client: VoxClient) -> int:
        try:
            outcomes = await client.wait_processed(
                bucket, key, processors=processors, timeout_s=timeout_s
            )
        except NotFound as exc:
            hint = "" if args.wait else " (--wait 60s waits for it)"
            print(f"consumer: {exc}{hint}", file=sys.stderr)
            return ExitCode.FAILURE
        if args.json:
            sys.stdout.write(json_lines(outcome.as_dict() for outcome in outcomes))
        else:
            sys.stdout.write("".join(outcome_line(outcome) for outcome in outcomes))
        failed = any(o.status == "failed" for o in outcomes)
        return ExitCode.FAILURE if failed else ExitCode.OK

    return with_client(settings, fetch)
