"""Pure tests of consumer.cli.output: JSON lines, the aligned table, human-readable sizes."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from consumer.cli.output import (
    ellipsize,
    fit_widths,
    for_terminal,
    human_bytes,
    json_lines,
    object_fields,
    short_time,
    table,
    usage_fields,
)
from consumer.cli.progress import ProgressBar, Screen, clock_time, render_bar
from consumer.index import ObjectRecord, UsageRow

# The fields the design promises on every `ls --json` line (the `ls` contract,
# docs/reference/cli/ls.md).
DOCUMENTED_FIELDS = {
    "bucket",
    "key",
    "version_id",
    "size",
    "etag",
    "content_type",
    "user_id",
    "metadata",
    "event_time",
    "indexed_at",
    "processing_status",
}

FIRST = datetime(2026, 11, 21, 9, 0, 0, 123000, tzinfo=UTC)
LAST = datetime(2026, 11, 21, 9, 5, 0, tzinfo=UTC)
INDEXED = datetime(2026, 11, 21, 9, 5, 1, tzinfo=UTC)


def record(**overrides: object) -> ObjectRecord:
    values: dict[str, object] = {
        "bucket": "voxpersona-audio",
        "key": "user_5/интервью 1.ogg",
        "version_id": "",
        "size": 48213,
        "etag": "5d41402abc4b2a76b9719d911017c592",
        "content_type": "audio/ogg",
        "user_id": "5",
        "metadata": {"user-id": "5", "session-type": "interview"},
        "first_event_time": FIRST,
        "last_event_time": LAST,
        "sequencer": "0" * 16 + "1860F1F0A5B2C3D4",
        "indexed_at": INDEXED,
        "deleted": False,
    }
    values.update(overrides)
    return ObjectRecord(**values)  # type: ignore[arg-type]


class TestObjectFields:
    def test_every_documented_field_is_present(self) -> None:
        fields = object_fields(record())
        assert fields.keys() >= DOCUMENTED_FIELDS

    def test_values(self) -> None:
        fields = object_fields(record())
        assert fields["bucket"] == "voxpersona-audio"
        assert fields["key"] == "user_5/интервью 1.ogg"
        assert fields["size"] == 48213
        assert fields["user_id"] == "5"
        assert fields["metadata"] == {"user-id": "5", "session-type": "interview"}
        assert fields["event_time"] == LAST.isoformat()  # the last event, not the first
        assert fields["indexed_at"] == INDEXED.isoformat()
        assert fields["processing_status"] is None

    def test_unknown_values_stay_null(self) -> None:
        fields = object_fields(record(size=None, etag=None, content_type=None, user_id=None))
        assert fields["size"] is None
        assert fields["etag"] is None
        assert fields["content_type"] is None
        assert fields["user_id"] is None

    def test_is_json_serialisable(self) -> None:
        line = json_lines([object_fields(record())])
        assert json.loads(line)["event_time"] == LAST.isoformat()


class TestUsageFields:
    def test_group_is_named_by_the_by_argument(self) -> None:
        row = UsageRow(
            "voxpersona-audio", objects=3, bytes=1536, stored_objects=5, stored_bytes=4096
        )
        assert usage_fields(row, "bucket") == {
            "bucket": "voxpersona-audio",
            "objects": 3,
            "bytes": 1536,
            "stored_objects": 5,
            "stored_bytes": 4096,
        }
        assert usage_fields(UsageRow(None, 1, 0, 1, 0), "user") == {
            "user": None,
            "objects": 1,
            "bytes": 0,
            "stored_objects": 1,
            "stored_bytes": 0,
        }

    def test_a_delete_marker_and_a_snippet_are_shown(self) -> None:
        marker = object_fields(
            record(deleted=True, last_event_name="s3:ObjectRemoved:DeleteMarkerCreated")
        )
        assert marker["delete_marker"] is True
        assert "snippet" not in marker
        assert object_fields(record(snippet="[бюджет] проекта"))["snippet"] == "[бюджет] проекта"


class TestJsonLines:
    def test_round_trips_one_object_per_line(self) -> None:
        rows = [
            {"key": "a b+c%d/голос.ogg", "size": 1, "metadata": {"k": "v"}, "x": None},
            {"key": "日本語/ファイル.wav", "size": 0, "metadata": {}, "x": [1, 2]},
        ]
        text = json_lines(rows)
        assert text.endswith("\n")
        lines = text.splitlines()
        assert len(lines) == 2
        assert [json.loads(line) for line in lines] == rows

    def test_keeps_unicode_unescaped(self) -> None:
        text = json_lines([{"key": "голос.ogg"}])
        assert "голос.ogg" in text
        assert "\\u" not in text

    def test_keeps_field_order(self) -> None:
        text = json_lines([{"z": 1, "a": 2}])
        assert text == '{"z": 1, "a": 2}\n'

    def test_newlines_in_values_stay_on_one_line(self) -> None:
        text = json_lines([{"key": "line1\nline2"}])
        assert text.count("\n") == 1

    def test_no_rows_is_empty(self) -> None:
        assert json_lines([]) == ""


class TestTable:
    def test_header_and_aligned_columns(self) -> None:
        rows = [
            {"bucket": "audio", "key": "a-long-key.ogg", "size": 5},
            {"bucket": "storage-bucket", "key": "k", "size": 12345},
        ]
        text = table(rows, ("bucket", "key", "size"))
        assert text.endswith("\n")
        lines = text.splitlines()
        assert lines == [
            "BUCKET          KEY             SIZE",
            "audio           a-long-key.ogg  5",
            "storage-bucket  k               12345",
        ]
        # Every column starts at the same offset on every line.
        for column in ("KEY", "SIZE"):
            start = lines[0].index(column)
            assert all(line[start - 2 : start] == "  " for line in lines)
            assert all(line[start] != " " for line in lines)

    def test_empty_input_gives_just_the_header(self) -> None:
        assert table([], ("bucket", "objects")) == "BUCKET  OBJECTS\n"

    def test_missing_none_and_dict_cells(self) -> None:
        rows: list[dict[str, Any]] = [
            {"key": "k1", "metadata": {"b": "2", "a": "1"}, "user_id": None},
            {"key": "k2", "metadata": {}},
        ]
        lines = table(rows, ("key", "user_id", "metadata")).splitlines()
        assert lines[1].split() == ["k1", "-", "a=1,b=2"]
        assert lines[2].split() == ["k2", "-", "-"]

    def test_no_trailing_spaces(self) -> None:
        rows = [{"a": "x", "b": ""}, {"a": "longer", "b": ""}]
        assert all(line == line.rstrip() for line in table(rows, ("a", "b")).splitlines())


class TestHumanBytes:
    @pytest.mark.parametrize(
        ("size", "expected"),
        [
            (None, "-"),
            (0, "0 B"),
            (1, "1 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (1024**2, "1.0 MiB"),
            (5 * 1024**3 // 2, "2.5 GiB"),
            (1024**4, "1.0 TiB"),
            (2048 * 1024**4, "2048.0 TiB"),
        ],
    )
    def test_units(self, size: int | None, expected: str) -> None:
        assert human_bytes(size) == expected


def test_transient_kafka_coordinator_errors_are_logged_as_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    import logging

    from consumer.logs import configure_logging

    configure_logging("info", json_output=True)
    try:
        logging.getLogger("aiokafka.consumer.group_coordinator").error(
            "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
        )
        logging.getLogger("aiokafka.consumer.group_coordinator").error("something else broke")
    finally:
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [line["level"] for line in lines] == ["warning", "error"]


# --- a table for a person at a terminal (issue 19) -----------------------------------------


class TestTableFitsAWidth:
    ROWS: Sequence[Mapping[str, Any]] = (
        {"bucket": "voxpersona-audio", "key": "user_5/2026-11-21/4f1c0a9b2e7d-long interview.wav",
         "size": "1.2 MiB", "metadata": {"user-id": "5", "session-type": "interview",
                                         "original-name": "long interview.wav"}},
        {"bucket": "voxpersona-audio", "key": "user_7/k.ogg", "size": "12 B", "metadata": {}},
    )  # fmt: skip
    COLUMNS = ("bucket", "key", "size", "metadata")

    @pytest.mark.parametrize("width", [120, 100, 80, 60])
    def test_every_line_fits_and_columns_stay_aligned(self, width: int) -> None:
        lines = table(self.ROWS, self.COLUMNS, width=width).splitlines()
        assert all(len(line) <= width for line in lines), lines
        start = lines[0].index("SIZE")
        assert lines[1][start:].startswith("1.2 MiB")
        assert lines[2][start:].startswith("12 B")

    def test_the_widest_column_is_cut_first_keeping_both_ends_of_a_key(self) -> None:
        lines = table(self.ROWS, self.COLUMNS, width=100).splitlines()
        assert lines[1].startswith("voxpersona-audio  user_5/")  # the bucket stays whole
        assert "…" in lines[1]
        key_cell = lines[1].split("  ")[1]
        assert key_cell.startswith("user_5/")
        assert key_cell.endswith("interview.wav")
        assert "user_7/k.ogg" in lines[2]  # short cells stay whole

    def test_wide_enough_changes_nothing(self) -> None:
        assert table(self.ROWS, self.COLUMNS, width=500) == table(self.ROWS, self.COLUMNS)

    def test_too_narrow_cuts_down_to_a_floor_and_no_further(self) -> None:
        lines = table(self.ROWS, self.COLUMNS, width=10).splitlines()
        assert lines[0].split() == ["BUCKET", "KEY", "SIZE", "METADATA"]
        assert min(len(cell) for cell in lines[1].split("  ") if cell) >= 7

    def test_columns_are_dropped_in_order_until_the_rows_fit_then_cut(self) -> None:
        columns = ("bucket", "key", "size", "metadata")
        wide = table(self.ROWS, columns, width=200, drop=("metadata",))
        assert wide == table(self.ROWS, columns)  # it fits: nothing dropped
        lines = table(self.ROWS, columns, width=60, drop=("metadata", "size")).splitlines()
        assert lines[0].split() == ["BUCKET", "KEY"]  # both dropped, then the key cut
        assert all(len(line) <= 60 for line in lines)
        lines = table(self.ROWS, columns, width=90, drop=("metadata", "size")).splitlines()
        assert lines[0].split() == ["BUCKET", "KEY", "SIZE"]  # dropping one was enough
        assert self.ROWS[0]["key"] in lines[1]

    def test_only_the_cut_columns_are_cut_and_labels_shorten_headers(self) -> None:
        rows = [{"key": "k" * 50, "event_time": "2026-11-21 09:05", "processing_status": "done"}]
        columns = ("key", "event_time", "processing_status")
        lines = table(
            rows, columns, width=40, cut=("key",), labels={"processing_status": "status"}
        ).splitlines()
        assert lines[0].split() == ["KEY", "EVENT_TIME", "STATUS"]
        assert lines[1].endswith("  2026-11-21 09:05  done")  # the time is never cut
        assert len(lines[0]) == 40  # the header runs to the last column's width

    def test_fit_widths(self) -> None:
        assert fit_widths([10, 50, 4], [6, 3, 4], 40) == [10, 22, 4]
        assert fit_widths([30, 30], [3, 3], 32) == [15, 15]
        assert fit_widths([30, 30], [3, 3], 5) == [8, 8]  # the floor

    @pytest.mark.parametrize(
        ("text", "width", "expected"),
        [("abcdef", 6, "abcdef"), ("abcdefgh", 5, "ab…gh"), ("abcdefgh", 4, "a…gh"),
         ("abc", 1, "a"), ("голосовое", 5, "го…ое")],
    )  # fmt: skip
    def test_ellipsize(self, text: str, width: int, expected: str) -> None:
        assert ellipsize(text, width) == expected
        assert len(ellipsize(text, width)) == min(len(text), width)


def test_short_times_and_human_sizes_for_a_terminal() -> None:
    assert short_time("2026-11-21T09:05:59.999000+00:00") == "2026-11-21 09:05"
    assert short_time("2026-11-21T12:05:00+03:00") == "2026-11-21 09:05"  # shown in UTC
    assert short_time(None) is None
    assert short_time("yesterday") == "yesterday"
    row = object_fields(record())
    shown = for_terminal(row)
    assert (shown["size"], shown["event_time"]) == ("47.1 KiB", "2026-11-21 09:05")
    assert shown["key"] == row["key"]
    assert row["size"] == 48213  # the row itself (the --json line) keeps its values
    assert for_terminal({"size": None, "event_time": None}) == {"size": None, "event_time": None}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_line_goes_above_the_bar_and_the_bar_is_redrawn() -> None:
    out = _Terminal()
    screen = Screen(out)
    bar = ProgressBar("big.wav", 100 * 1024**2, stream=screen)
    bar.update(36 * 1024**2)
    screen.write("warning  retrying  what=upload\n")  # what logging's handler does
    bar.finish()
    text = out.getvalue()
    # Each drawing starts by clearing the line; the warning is on a line of its own,
    # after the bar was cleared, and the bar comes back after it.
    before, warning, after = text.partition("warning  retrying  what=upload\n")
    assert warning
    assert before.endswith("\r\033[K")
    assert "36%" in before
    assert "36%" in after.split("\r\033[K")[0]
    last = after.rsplit("\r\033[K", 1)[1]
    assert last.startswith("big.wav [" + "#" * 28 + "] 100%  100.0 MiB/100.0 MiB")
    assert last.endswith("\n")
    assert "\n" not in before  # the bar never took a line of its own before the warning


def test_a_cleared_live_line_leaves_nothing_for_the_summary_to_follow() -> None:
    out = _Terminal()
    screen = Screen(out)
    screen.show("reconcile: b1: listed 1208")
    screen.clear()
    screen.write("reconcile 2026…: missing=0\n")
    assert out.getvalue() == (
        "\r\033[Kreconcile: b1: listed 1208\r\033[Kreconcile 2026…: missing=0\n"
    )


def test_nothing_live_is_drawn_off_a_terminal_and_a_disabled_bar_draws_nothing() -> None:
    plain = io.StringIO()
    screen = Screen(plain)
    screen.show("reconcile: listed 5")
    screen.clear()
    assert plain.getvalue() == ""
    silent = ProgressBar("x.wav", 100, stream=_Terminal(), enabled=False)
    silent.status("reading")
    silent.update(50)
    silent.finish()
    assert silent._screen.stream.getvalue() == ""  # type: ignore[attr-defined]


def test_the_bar_shows_the_time_left() -> None:
    line = render_bar("big.wav", 25, 100, elapsed_s=10.0)
    assert line.endswith("ETA 0:30")
    assert "ETA" not in render_bar("big.wav", 100, 100, elapsed_s=10.0)
    assert "ETA" not in render_bar("big.wav", 0, 100, elapsed_s=10.0)
    assert [clock_time(s) for s in (0, 7.4, 59.6, 750, 3723)] == [
        "0:00", "0:07", "1:00", "12:30", "1:02:03"
    ]  # fmt: skip
