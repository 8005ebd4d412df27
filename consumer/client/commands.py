"""The client verbs of ``python -m consumer``: upload, presign, delete, import.

Each handler takes the parsed arguments and the settings, prints results (``--json``: one
JSON object per line on stdout; progress and summaries on stderr) and returns the exit
code: 0 all done, 1 something failed at run time. Bad input raises InvalidInput (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from consumer.client.api import VoxClient
from consumer.client.importer import (
    DEFAULT_MANIFEST_NAME,
    ImportItem,
    RollbackItem,
    rollback_import,
    run_import,
)
from consumer.client.presign import DEFAULT_EXPIRY
from consumer.client.progress import ProgressBar
from consumer.durations import parse_duration
from consumer.errors import ConsumerError, InvalidInput
from consumer.names import check_bucket, check_key, parse_metadata_options
from consumer.output import human_bytes, json_lines, table
from consumer.settings import Settings

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1


def split_bucket_key(target: str, bucket: str | None) -> tuple[str, str]:
    """``KEY`` with ``--bucket B``, or ``BUCKET/KEY`` without it."""
    if bucket:
        return check_bucket(bucket), check_key(target)
    name, sep, key = target.partition("/")
    if not sep or not name or not key:
        raise InvalidInput(f"{target!r}: give BUCKET/KEY, or KEY with --bucket")
    return check_bucket(name), check_key(key)


def add_client_verbs(verbs: argparse._SubParsersAction[Any]) -> None:
    """The parsers of upload, presign, delete and import."""
    upload = verbs.add_parser("upload", help="upload files with metadata (multipart, retries)")
    upload.add_argument("files", nargs="+", metavar="FILE", type=Path)
    _add_owner(upload, required=True)
    upload.add_argument("--bucket", help="default: MINIO_AUDIO_BUCKET_NAME")
    upload.add_argument("--json", action="store_true", help="one JSON object per file")

    presign = verbs.add_parser("presign", help="presigned upload (POST policy or PUT) or download")
    kinds = presign.add_subparsers(dest="presign_kind", required=True, metavar="upload|download")
    up = kinds.add_parser("upload", help="a POST policy (or --put URL) for one new object")
    up.add_argument("--name", required=True, help="the file's original name (kept in metadata)")
    _add_owner(up, required=True)
    up.add_argument("--content-type", help="default: from the name's extension")
    up.add_argument("--max-size", type=int, help="bytes; at most MINIO_MAX_FILE_SIZE (default)")
    up.add_argument("--put", action="store_true", help="a PUT URL with signed headers instead")
    up.add_argument("--expires", type=parse_duration, default=DEFAULT_EXPIRY, help="e.g. 15m, 1h")
    up.add_argument("--json", action="store_true", help="the request as one JSON object")
    down = kinds.add_parser("download", help="a GET URL for BUCKET/KEY (or KEY --bucket B)")
    down.add_argument("target", metavar="BUCKET/KEY")
    down.add_argument("--bucket")
    down.add_argument("--version-id")
    down.add_argument("--expires", type=parse_duration, default=DEFAULT_EXPIRY, help="e.g. 15m, 1h")
    down.add_argument("--json", action="store_true", help="the URL as one JSON object")

    delete = verbs.add_parser("delete", help="delete objects (the index follows their events)")
    delete.add_argument("targets", nargs="+", metavar="BUCKET/KEY")
    delete.add_argument("--bucket", help="the bucket of every KEY (then give bare keys)")
    delete.add_argument("--version-id", help="delete this version (one key only)")
    delete.add_argument("--wait", action="store_true", help="return once the index dropped them")
    delete.add_argument("--json", action="store_true", help="one JSON object per key")

    migrate = verbs.add_parser(
        "import", help="migrate a directory of files (resumable; --rollback MANIFEST undoes)"
    )
    migrate.add_argument("directory", nargs="?", type=Path, metavar="DIR")
    _add_owner(migrate, required=False)
    migrate.add_argument("--bucket", help="default: MINIO_AUDIO_BUCKET_NAME")
    migrate.add_argument("--manifest", type=Path, help=f"default: DIR/{DEFAULT_MANIFEST_NAME}")
    migrate.add_argument("--rollback", type=Path, metavar="MANIFEST", help="undo that import")
    migrate.add_argument("--json", action="store_true", help="one JSON object per file")


def _add_owner(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--user", required=required, help="the owning user id")
    parser.add_argument("--session-type", help="stored as metadata session-type")
    parser.add_argument("--meta", action="append", metavar="KEY=VALUE", help="more metadata")


# --- handlers ----------------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    metadata = parse_metadata_options(args.meta)
    for path in args.files:
        if not path.is_file():
            raise InvalidInput(f"{path}: not a regular file")

    async def upload_all(client: VoxClient) -> int:
        failures = 0
        for path in args.files:
            bar = ProgressBar(path.name, path.stat().st_size)
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
                _emit(args.json, {"file": str(path), "outcome": "failed", "error": str(exc)})
                failures += 1
                continue
            bar.finish()
            row = {"file": str(path), "outcome": "uploaded", **result.as_dict()}
            if args.json:
                _emit(True, row)
            else:
                print(
                    f"{result.bucket}/{result.key}  {human_bytes(result.size)}  etag {result.etag}"
                )
        return EXIT_FAILURE if failures else EXIT_OK

    return _with_client(settings, upload_all)


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

    request = asyncio.run(_client_call(settings, presign))
    if args.json:
        print(json.dumps(request, ensure_ascii=False))
    else:
        _print_request(request)
    return EXIT_OK


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
            sys.stdout.write(table(rows, ("bucket", "key", "version_id", "outcome", "error")))
        return EXIT_FAILURE if any(row["outcome"] == "failed" for row in rows) else EXIT_OK

    return _with_client(settings, delete)


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    if args.rollback:
        if args.directory or args.user:
            raise InvalidInput("--rollback MANIFEST takes no DIR and no --user")
        return _with_client(settings, lambda client: _rollback(client, args))
    if args.directory is None or args.user is None:
        raise InvalidInput("import needs DIR and --user (or --rollback MANIFEST)")
    metadata = parse_metadata_options(args.meta)
    return _with_client(settings, lambda client: _migrate(client, args, metadata))


async def _migrate(client: VoxClient, args: argparse.Namespace, metadata: dict[str, str]) -> int:
    bars: dict[str, ProgressBar] = {}

    def progress(path: str, sent: int, total: int) -> None:
        bar = bars.setdefault(path, ProgressBar(path, total))
        bar.update(sent)

    def show(item: ImportItem) -> None:
        bar = bars.pop(item.path, None)
        if bar is not None:
            bar.finish("" if item.outcome != "failed" else f"  failed: {item.error}")
        if args.json:
            _emit(True, item.as_dict())
        elif item.outcome != "uploaded" or bar is None:
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
        _emit(True, {"summary": summary})
    print(
        "import {import_id}: uploaded={uploaded} adopted={adopted} skipped={skipped} "
        "failed={failed} bytes={bytes_uploaded}; manifest {manifest}".format(**summary),
        file=sys.stderr,
    )
    return EXIT_FAILURE if report.failed else EXIT_OK


async def _rollback(client: VoxClient, args: argparse.Namespace) -> int:
    def show(item: RollbackItem) -> None:
        if args.json:
            _emit(True, item.as_dict())
        else:
            detail = f": {item.error}" if item.error else ""
            print(f"{item.outcome:<8} {item.bucket}/{item.key}{detail}")

    items = await rollback_import(client, args.rollback, on_item=show)
    counts = {
        name: sum(1 for i in items if i.outcome == name)
        for name in ("deleted", "gone", "changed", "failed")
    }
    print("rollback: " + " ".join(f"{k}={v}" for k, v in counts.items()), file=sys.stderr)
    return EXIT_FAILURE if counts["failed"] else EXIT_OK


# --- plumbing ---------------------------------------------------------------------------


def _emit(as_json: bool, row: dict[str, Any]) -> None:
    if as_json:
        print(json.dumps(row, ensure_ascii=False), flush=True)


async def _client_call(settings: Settings, call: Callable[[VoxClient], Any]) -> Any:
    async with VoxClient(settings) as client:
        return await _interruptible(call(client))


async def _interruptible(work: Awaitable[Any]) -> Any:
    """``work``, cancelled by Ctrl-C (then KeyboardInterrupt) however busy the threads are.

    asyncio.run's own SIGINT handler is a plain Python handler: when the kernel hands the
    signal to a worker thread (an upload's), the main thread sleeps on in its selector and
    only notices once the upload has finished. ``add_signal_handler`` wakes the loop through
    its self-pipe, whichever thread received the signal."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await task
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _with_client(settings: Settings, call: Callable[[VoxClient], Any]) -> int:
    code: int = asyncio.run(_client_call(settings, call))
    return code


COMMANDS: Final[dict[str, Callable[[argparse.Namespace, Settings], int]]] = {
    "upload": cmd_upload,
    "presign": cmd_presign,
    "delete": cmd_delete,
    "import": cmd_import,
}
