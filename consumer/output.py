"""How query results look on the command line: JSON lines or an aligned table. Pure."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

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


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain aligned table; empty input gives just the header."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


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
    width = max(len(name) for name, _ in rows)
    return "".join(f"{name.ljust(width)}  {value}\n" for name, value in rows)
