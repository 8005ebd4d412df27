"""How query results look on the command line: JSON lines or an aligned table. Pure.

On a terminal a table is made for a person (``for_terminal``): sizes in KiB/MiB, times
to the minute, and the widest columns cut with an ellipsis so that each row fits the
width. Elsewhere (pipes, files) and in ``--json`` every value is printed in full.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from consumer.index import GrowthRow, ObjectRecord, UsageRow


def object_fields(record: ObjectRecord) -> dict[str, Any]:
    """The documented fields of one live object (the `ls --json` line)."""
    return {
        "bucket": record.bucket,
        "key": record.key,
        "version_id": record.version_id,
        "size": record.size,
        "etag": record.etag,
        "content_type": record.content_type,
        "user_id": record.user_id,
        "metadata": record.metadata,
        "event_time": _iso(record.last_event_time),
        "first_event_time": _iso(record.first_event_time),
        "indexed_at": _iso(record.indexed_at),
        "sequencer": record.sequencer,
        "processing_status": record.processing_status,
        "is_latest": record.is_latest,
        "delete_marker": record.is_delete_marker,
        **({"snippet": record.snippet} if record.snippet is not None else {}),
    }


def usage_fields(row: UsageRow, by: str) -> dict[str, Any]:
    """Live objects and bytes (the latest versions), and what every stored version takes."""
    return {
        by: row.group,
        "objects": row.objects,
        "bytes": row.bytes,
        "stored_objects": row.stored_objects,
        "stored_bytes": row.stored_bytes,
    }


def growth_fields(row: GrowthRow) -> dict[str, Any]:
    """One day of `usage --growth` (UTC)."""
    return {
        "day": row.day.isoformat(),
        "objects_created": row.objects_created,
        "bytes_created": row.bytes_created,
        "objects_removed": row.objects_removed,
        "bytes_removed": row.bytes_removed,
        "net_objects": row.net_objects,
        "net_bytes": row.net_bytes,
    }


def json_lines(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n" for row in rows)


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    width: int | None = None,
    drop: Sequence[str] = (),
    cut: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """A plain aligned table; empty input gives just the header.

    With ``width`` (a terminal's), rows wider than it give way: first the ``drop``
    columns are left out, in that order, while the rows are too wide; then the widest
    of the ``cut`` columns (default: any) are cut with ``…``, down to a floor. ``labels``
    are headers to show instead of the column names."""
    names = dict(labels or {})
    cells = {c: [_cell(row.get(c)) for row in rows] for c in columns}
    natural = {c: max([len(names.get(c, c)), *map(len, cells[c])]) for c in columns}
    shown = list(columns)
    if width is not None:
        for column in drop:
            if _width_of([natural[c] for c in shown]) <= width:
                break
            if column in shown:
                shown.remove(column)
    widths = [natural[c] for c in shown]
    if width is not None:
        cuttable = [cut is None or c in cut for c in shown]
        widths = fit_widths(widths, [len(names.get(c, c)) for c in shown], width, cuttable)
    headers = [names.get(c, c).upper()[:w].ljust(w) for c, w in zip(shown, widths, strict=True)]
    lines = ["  ".join(headers)]
    for index in range(len(rows)):
        values = [ellipsize(cells[c][index], w) for c, w in zip(shown, widths, strict=True)]
        lines.append("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines) + "\n"


_MIN_CUT: Final = 8  # a column is never cut narrower than this (or its header)
_GAP: Final = 2


def _width_of(widths: Sequence[int]) -> int:
    return sum(widths) + _GAP * (len(widths) - 1)


def fit_widths(
    widths: Sequence[int],
    headers: Sequence[int],
    total: int,
    cuttable: Sequence[bool] | None = None,
) -> list[int]:
    """Column widths whose sum with the gaps is at most ``total``: the widest cuttable
    column is narrowed first, down to its header or ``_MIN_CUT``. As close as it gets
    when even the narrowest widths do not fit."""
    fitted = list(widths)
    allowed = list(cuttable) if cuttable is not None else [True] * len(fitted)
    floors = [min(w, max(h, _MIN_CUT)) for w, h in zip(widths, headers, strict=True)]
    excess = _width_of(fitted) - total
    while excess > 0:
        candidates = [i for i, w in enumerate(fitted) if allowed[i] and w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: fitted[i])
        fitted[widest] -= 1
        excess -= 1
    return fitted


def ellipsize(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its middle replaced by ``…`` (a key's
    user prefix and file name are what tell keys apart)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{text[:head]}…{text[len(text) - tail :] if tail else ''}"


def short_time(iso: str | None) -> str | None:
    """``2026-11-21T09:05:00.123+00:00`` → ``2026-11-21 09:05`` (UTC, to the minute)."""
    if iso is None:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:  # not a time after all: shown as it is
        return iso
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M")


def for_terminal(
    row: Mapping[str, Any],
    *,
    sizes: Sequence[str] = ("size",),
    times: Sequence[str] = ("event_time",),
) -> dict[str, Any]:
    """``row`` as a person reads it: ``sizes`` in KiB/MiB, ``times`` to the minute."""
    shown = dict(row)
    for name in sizes:
        if name in shown and isinstance(shown[name], int):
            shown[name] = human_bytes(shown[name])
    for name in times:
        if isinstance(shown.get(name), str):
            shown[name] = short_time(shown[name])
    return shown


def human_bytes(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    return str(value)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def status_table(report: Mapping[str, Any]) -> str:
    """The /status report for people: one "name  value" line each."""
    rows: list[tuple[str, str]] = [
        ("status", str(report["status"])),
        ("service", str(report.get("service", "-"))),
    ]
    for name, check in report["connections"].items():
        state = f"ok ({check['latency_ms']} ms)" if check["ok"] else f"DOWN: {check['error']}"
        rows.append((name, state))
    rows += [
        ("success_rate", f"{report['success_rate']} %"),
        ("average_response_time", f"{report['average_response_time']} ms"),
        ("operations_total", str(report["operations_total"])),
    ]
    for group, lag in report["lag"].items():
        rows.append((f"lag {group}", "-" if lag is None else str(lag["total"])))
    dlq = report["dlq_messages"]
    rows.append(("dlq_messages", "-" if dlq is None else str(dlq)))
    rows += minio_queue_rows(report.get("minio_queue"))
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name.ljust(width)}  {value}\n" for name, value in rows)


def minio_queue_rows(queue: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The status table's lines about MinIO's queue for the notify target (none when
    its reading is off)."""
    if queue is None:
        return []
    if queue.get("error"):
        return [("minio_queue", f"unknown: {queue['error']}")]
    rate = queue.get("delivery_rate")
    rows = [
        ("minio_queue", f"{queue['queue_length']} events waiting ({queue['target']})"),
        ("minio_failed_events", str(queue["failed_events"])),
        ("minio_total_events", str(queue["total_events"])),
        ("minio_delivery_rate", "-" if rate is None else f"{rate} events/s"),
    ]
    unchanged_s = queue.get("unchanged_s")
    if queue["queue_length"] and unchanged_s:
        # A queue that holds events and does not move: MinIO may never send them.
        rows.append(("minio_queue_unchanged", f"{unchanged_s:.0f} s"))
    if queue.get("degraded"):
        rows.append(("degraded", str(queue["degraded"])))
    return rows
