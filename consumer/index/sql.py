"""SQL the two index backends share, and the pure functions that build it.

Column lists and upserts both dialects accept word for word, and ``RowReader``, which
turns rows of those columns back into records; ``Conditions`` builds WHERE clauses whose
values always travel as parameters ("?" for SQLite, "$n" for PostgreSQL; ``numbered``
fills in the placeholders of a fixed statement); ``Dialect`` holds the few fragments in
which the two differ, so the listing (of an ``ObjectQuery``), usage, counts and growth
queries are written once. Also the guards every query needs (literal LIKE prefixes,
statement-sized chunks) and the text-search helpers (the words of a query, FTS5's MATCH
expression, PostgreSQL's configuration per language). Nothing here does I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

from consumer.errors import InvalidInput
from consumer.events import RECONCILE_FOUND, RECONCILE_GONE, AnyEvent, EventKind
from consumer.index.records import (
    DELETE_MARKER_CREATED,
    GrowthRow,
    JobRecord,
    JobStatus,
    JournalRecord,
    KafkaPosition,
    ObjectQuery,
    ObjectRecord,
    ObjectRow,
    Versions,
    check_limit,
)

T = TypeVar("T")


# --- columns and clauses both dialects share word for word -----------------------------


OBJECT_COLUMNS: Final = (
    "bucket, key, version_id, size, etag, content_type, user_id, user_metadata,"
    " first_event_time, last_event_time, sequencer, indexed_at, deleted, last_event_name,"
    " deleted_at"
)


JOURNAL_COLUMNS: Final = (
    "id, bucket, key, version_id, event_name, kind, event_time, sequencer, principal_id,"
    " source_ip, user_agent, request_id, size, etag, kafka_topic, kafka_partition,"
    " kafka_offset, recorded_at"
)


def journal_values(
    event: AnyEvent, position: KafkaPosition | None, event_time: object
) -> tuple[object, ...]:
    """An entry's values in ``JOURNAL_COLUMNS`` order from bucket to kafka_offset (the
    database numbers it; the backend adds recorded_at where it writes one), with
    ``event_time`` in the dialect's stored form."""
    return (
        event.bucket,
        event.key,
        event.version_id,
        event.event_name,
        event.kind.value,
        event_time,
        event.sequencer,
        event.principal_id,
        event.source_ip,
        event.user_agent,
        event.request_id,
        event.size,
        event.etag,
        position.topic if position else None,
        position.partition if position else None,
        position.offset if position else None,
    )


JOB_COLUMNS: Final = (
    "bucket, key, version_id, processor, sequencer, etag, status, attempts, last_error,"
    " result_bucket, result_key, created_at, started_at, finished_at, duration_ms, updated_at,"
    " lease_owner, lease_expires_at"
)


# Saving a planned row replaces every column of the stored one (see plan_objects).
OBJECT_UPSERT: Final = """
ON CONFLICT (bucket, key, version_id) DO UPDATE SET
    size = excluded.size, etag = excluded.etag, content_type = excluded.content_type,
    user_id = excluded.user_id, user_metadata = excluded.user_metadata,
    first_event_time = excluded.first_event_time, last_event_time = excluded.last_event_time,
    sequencer = excluded.sequencer, indexed_at = excluded.indexed_at,
    deleted = excluded.deleted, last_event_name = excluded.last_event_name,
    deleted_at = excluded.deleted_at"""


# A claimed job as decisions.job_start says it starts (its attempts carried on or not).
JOB_PEND_UPSERT: Final = """
ON CONFLICT (bucket, key, version_id, processor) DO UPDATE SET
    attempts = excluded.attempts, last_error = excluded.last_error,
    sequencer = excluded.sequencer, etag = excluded.etag, status = 'pending',
    updated_at = excluded.updated_at, lease_owner = excluded.lease_owner,
    lease_expires_at = excluded.lease_expires_at"""


# The summary status of an object's jobs, worst first: failed, running, pending, done.
PROCESSING_STATUS_SQL: Final = (
    "SELECT status FROM jobs WHERE jobs.bucket = objects.bucket AND jobs.key = objects.key"
    " AND jobs.version_id = objects.version_id ORDER BY CASE status WHEN 'failed' THEN 0"
    " WHEN 'running' THEN 1 WHEN 'pending' THEN 2 ELSE 3 END LIMIT 1"
)


# --- rows of those columns back as records ----------------------------------------------


@dataclass(frozen=True)
class RowReader:
    """Records from result rows, read by position in the column order above; ``time`` and
    ``metadata`` turn a stored time and the stored user metadata back into Python values
    (SQLite hands back ISO text and JSON text, asyncpg a datetime and a dict already).

    A row of ``OBJECT_COLUMNS`` may carry, after them, the listing's processing_status,
    is_latest and snippet columns (``listing_query``); a shorter row leaves them None.
    """

    time: Callable[[Any], datetime]
    metadata: Callable[[Any], dict[str, str]]

    def optional_time(self, value: Any) -> datetime | None:
        return None if value is None else self.time(value)

    def object_record(self, row: Any) -> ObjectRecord:
        return ObjectRecord(
            bucket=row[0],
            key=row[1],
            version_id=row[2],
            size=row[3],
            etag=row[4],
            content_type=row[5],
            user_id=row[6],
            metadata=self.metadata(row[7]),
            first_event_time=self.time(row[8]),
            last_event_time=self.time(row[9]),
            sequencer=row[10],
            indexed_at=self.time(row[11]),
            deleted=bool(row[12]),
            last_event_name=row[13],
            deleted_at=self.optional_time(row[14]),
            processing_status=row[15] if len(row) > 15 else None,
            is_latest=bool(row[16]) if len(row) > 16 else None,
            snippet=row[17] if len(row) > 17 else None,
        )

    def object_row(self, row: Any) -> ObjectRow:
        """A stored row of ``OBJECT_COLUMNS`` as a batch plans it (see ObjectRow)."""
        return ObjectRow(
            row[0], row[1], row[2], row[3], row[4], row[5], row[6], self.metadata(row[7]),
            self.time(row[8]), self.time(row[9]), row[10], self.time(row[11]), bool(row[12]),
            row[13], self.optional_time(row[14]),
        )  # fmt: skip

    def job_record(self, row: Any) -> JobRecord:
        return JobRecord(
            bucket=row[0],
            key=row[1],
            version_id=row[2],
            processor=row[3],
            sequencer=row[4],
            etag=row[5],
            status=JobStatus(row[6]),
            attempts=row[7],
            last_error=row[8],
            result_bucket=row[9],
            result_key=row[10],
            created_at=self.time(row[11]),
            started_at=self.optional_time(row[12]),
            finished_at=self.optional_time(row[13]),
            duration_ms=row[14],
            updated_at=self.time(row[15]),
            lease_owner=row[16],
            lease_expires_at=self.optional_time(row[17]),
        )

    def journal_record(self, row: Any) -> JournalRecord:
        topic, partition, offset = row[14], row[15], row[16]
        return JournalRecord(
            id=row[0],
            bucket=row[1],
            key=row[2],
            version_id=row[3],
            event_name=row[4],
            kind=EventKind(row[5]),
            event_time=self.time(row[6]),
            sequencer=row[7],
            principal_id=row[8],
            source_ip=row[9],
            user_agent=row[10],
            request_id=row[11],
            size=row[12],
            etag=row[13],
            kafka=KafkaPosition(topic, partition, offset) if topic is not None else None,
            recorded_at=self.time(row[17]),
        )


# --- WHERE clauses without formatting values into SQL ----------------------------------


@dataclass
class Conditions:
    """AND-ed SQL conditions with their parameters, for either placeholder style.

    Templates are constant SQL fragments with ``{}`` where a parameter goes; only the
    placeholders ("?" or "$n") are formatted in, values always travel as parameters.
    ``first`` is the number of the first parameter, for conditions that follow others in
    one statement.
    """

    placeholder: Callable[[int], str]  # 1-based parameter number -> placeholder text
    clauses: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)
    first: int = 1

    def add(self, template: str, *values: object) -> None:
        first = len(self.params) + self.first
        marks = [self.placeholder(first + i) for i in range(len(values))]
        self.clauses.append(template.format(*marks))
        self.params.extend(values)

    def next_placeholder(self) -> str:
        """The placeholder for a parameter appended after the conditions (e.g. LIMIT)."""
        return self.placeholder(len(self.params) + self.first)

    def following(self) -> Conditions:
        """Empty conditions whose parameters come after these ones."""
        return Conditions(self.placeholder, first=len(self.params) + self.first)

    @property
    def where(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""


def qmark(_: int) -> str:
    return "?"


def dollar(number: int) -> str:
    return f"${number}"


@functools.cache
def numbered(template: str, placeholder: Callable[[int], str]) -> str:
    """A constant statement with each ``{}`` replaced by the next placeholder: the values
    go as parameters in the order of the marks. Cached: a statement is numbered once."""
    return template.format(*(placeholder(n) for n in range(1, template.count("{}") + 1)))


def key_is(where: Conditions, bucket: str, key: str) -> None:
    """The plain condition on one key's journal entries (PostgreSQL: its hash index)."""
    where.add("bucket = {} AND key = {}", bucket, key)


@dataclass(frozen=True)
class Dialect:
    """The pieces of SQL in which the two backends differ, for the shared queries."""

    placeholder: Callable[[int], str]
    is_deleted: str  # "deleted = 1" (SQLite's 0/1) or "deleted" (PostgreSQL's boolean)
    is_live: str  # its negation as the indexes are written: "deleted = 0", "NOT deleted"
    add_metadata: Callable[[Conditions, dict[str, str]], None]
    moment: Callable[[datetime], object]
    # The matching transcripts of a text search: a SELECT of hit_bucket, hit_key,
    # hit_version and snippet, with one {} where the query parameter goes.
    text_hits: str
    text_query: Callable[[str], object]  # the search text as that parameter
    # The rows a user may own, as a FROM source with "?" marks and its parameters, where
    # the plain ``user_id = …`` condition would not find them by an index (SQLite).
    owned_rows: Callable[[str], tuple[str, list[object]]] | None = None
    # The condition "an entry of this (bucket, key)" on the journal, likewise.
    add_key_history: Callable[[Conditions, str, str], None] = key_is

    @property
    def gone(self) -> str:
        """A removed version: a tombstone that is not a delete marker."""
        return f"({self.is_deleted} AND last_event_name <> '{DELETE_MARKER_CREATED}')"


def journal_conditions(
    dialect: Dialect,
    bucket: str | None,
    key: str | None,
    kinds: Collection[EventKind] | None,
) -> Conditions:
    """The filters of ``journal``: one key's history as the dialect finds it."""
    where = Conditions(dialect.placeholder)
    if bucket is not None and key is not None:
        dialect.add_key_history(where, bucket, key)
    elif bucket is not None:
        where.add("bucket = {}", bucket)
    elif key is not None:
        where.add("key = {}", key)
    if kinds is not None:
        ordered = sorted(str(kind) for kind in kinds)
        if not ordered:
            where.add("1 = 0")
        else:
            where.add(f"kind IN ({', '.join(['{}'] * len(ordered))})", *ordered)
    return where


def journal_query(
    dialect: Dialect,
    *,
    bucket: str | None,
    key: str | None,
    kinds: Collection[EventKind] | None,
    limit: int,
) -> tuple[str, list[object]]:
    """SQL and parameters of ``journal``: the newest entries first."""
    where = journal_conditions(dialect, bucket, key, kinds)
    sql = (
        f"SELECT {JOURNAL_COLUMNS} FROM journal{where.where}"  # noqa: S608 - constant fragments
        f" ORDER BY id DESC LIMIT {where.next_placeholder()}"
    )
    return sql, [*where.params, check_limit(limit)]


def jobs_query(
    placeholder: Callable[[int], str],
    *,
    bucket: str | None,
    key: str | None,
    status: str | None,
    limit: int,
) -> tuple[str, list[object]]:
    """SQL and parameters of ``jobs``, ordered by the job's identity."""
    where = Conditions(placeholder)
    for column, value in (("bucket", bucket), ("key", key), ("status", status)):
        if value is not None:
            where.add(f"{column} = {{}}", str(value))
    sql = (
        f"SELECT {JOB_COLUMNS} FROM jobs{where.where}"  # noqa: S608 - constant fragments
        f" ORDER BY bucket, key, version_id, processor LIMIT {where.next_placeholder()}"
    )
    return sql, [*where.params, check_limit(limit)]


LIKE_ESCAPE: Final = "\\"


def escape_like(prefix: str) -> str:
    """A LIKE pattern matching keys that start with ``prefix`` literally (ESCAPE '\\')."""
    escaped = (
        prefix.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    return escaped + "%"


def chunked(values: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """``values`` in slices of at most ``size`` (statements have a parameter limit)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --- listings and usage ----------------------------------------------------------------


# Latest first: the greatest sequencer (the version's modification time) wins; the first
# event's time and the version id only break ties.
_VERSION_RANK: Final = (
    "ROW_NUMBER() OVER (PARTITION BY bucket, key"
    " ORDER BY sequencer DESC, first_event_time DESC, version_id DESC)"
)


def listing_query(query: ObjectQuery, dialect: Dialect) -> tuple[str, list[object]]:
    """SQL and parameters of ``list_objects`` in the dialect: the ROWS view here, the
    CURRENT and ALL views by ``version_listing_query``."""
    if query.versions is not Versions.ROWS:
        return version_listing_query(query, dialect)
    source, params = "objects", list[object]()
    if query.user_id is not None and dialect.owned_rows is not None:
        rows, params = dialect.owned_rows(query.user_id)
        source = f"({rows}) AS objects"
    where = Conditions(dialect.placeholder, first=len(params) + 1)
    if not query.include_deleted:
        where.add(dialect.is_live)
    add_key_conditions(where, query)
    add_row_conditions(where, query, dialect)
    sql = (
        f"SELECT {OBJECT_COLUMNS}, ({PROCESSING_STATUS_SQL}) AS processing_status"  # noqa: S608 - constant fragments
        f" FROM {source}{where.where}"
        f" ORDER BY bucket, key, version_id LIMIT {where.next_placeholder()}"
    )
    return sql, [*params, *where.params, query.limit]


def add_key_conditions(where: Conditions, query: ObjectQuery) -> None:
    """The filters that keep or drop whole keys (every version alike)."""
    if query.bucket is not None:
        where.add("bucket = {}", query.bucket)
    if query.prefix:
        where.add("key LIKE {} ESCAPE '\\'", escape_like(query.prefix))


def add_row_conditions(where: Conditions, query: ObjectQuery, dialect: Dialect) -> None:
    """The filters that look at one version's row (its owner, metadata, jobs, age), then
    the cursor."""
    if query.user_id is not None:
        where.add("user_id = {}", query.user_id)
    if query.metadata:
        dialect.add_metadata(where, dict(query.metadata))
    if query.processing_status is not None:
        where.add(f"({PROCESSING_STATUS_SQL}) = {{}}", query.processing_status)
    if query.created_before is not None:
        where.add("first_event_time < {}", dialect.moment(query.created_before))
    if query.after is not None:
        where.add("(bucket, key, version_id) > ({}, {}, {})", *query.after)


def version_listing_query(query: ObjectQuery, dialect: Dialect) -> tuple[str, list[object]]:
    """SQL and parameters of a listing in the CURRENT or ALL view (see Versions).

    Removed versions never show; the key filters (bucket, prefix) narrow the versions
    ranked, the row filters (user, metadata, status, age, cursor) apply to the ranked
    rows — so an older version of another owner cannot stand in for the latest one.
    ``text`` keeps the rows whose transcript matches, with a snippet.
    """
    inner = Conditions(dialect.placeholder)
    inner.add(f"NOT {dialect.gone}")
    add_key_conditions(inner, query)
    join = ""
    params: list[object] = list(inner.params)
    outer = inner.following()
    if query.text is not None:
        mark = outer.next_placeholder()
        params.append(dialect.text_query(query.text))
        join = (
            f" JOIN ({dialect.text_hits.format(mark)}) AS hits ON hits.hit_bucket = objects.bucket"
            " AND hits.hit_key = objects.key AND hits.hit_version = objects.version_id"
        )
        outer = Conditions(dialect.placeholder, first=outer.first + 1)
    if query.versions is Versions.CURRENT:
        outer.add(f"version_rank = 1 AND NOT ({dialect.is_deleted})")
    add_row_conditions(outer, query, dialect)
    params += outer.params
    params.append(query.limit)
    snippet = ", hits.snippet AS snippet" if query.text is not None else ""
    sql = f"""
WITH ranked AS (
    SELECT {OBJECT_COLUMNS}, {_VERSION_RANK} AS version_rank
    FROM objects{inner.where}
)
SELECT {OBJECT_COLUMNS}, ({PROCESSING_STATUS_SQL}) AS processing_status,
       version_rank = 1 AS is_latest{snippet}
FROM ranked AS objects{join}{outer.where}
ORDER BY bucket, key, version_id LIMIT {outer.next_placeholder()}"""  # noqa: S608 - constant fragments, values are parameters
    return sql, params


def usage_query(by: Literal["user", "bucket"], dialect: Dialect) -> str:
    """SQL giving UsageRow's columns per group: live (latest, not a delete marker) and
    stored (every version not removed) objects and bytes; groups holding nothing are
    left out. Ordered by group, None last."""
    group = {"user": "user_id", "bucket": "bucket"}[by]
    return f"""
WITH ranked AS (
    SELECT {group} AS grp, size, CASE WHEN {dialect.is_deleted} THEN 0 ELSE 1 END AS stored,
           {_VERSION_RANK} AS version_rank
    FROM objects WHERE NOT {dialect.gone}
)
SELECT grp,
    CAST(SUM(CASE WHEN version_rank = 1 THEN stored ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN version_rank = 1 AND stored = 1 THEN COALESCE(size, 0) ELSE 0 END)
         AS BIGINT),
    CAST(SUM(stored) AS BIGINT),
    CAST(SUM(CASE WHEN stored = 1 THEN COALESCE(size, 0) ELSE 0 END) AS BIGINT)
FROM ranked GROUP BY grp HAVING SUM(stored) > 0
ORDER BY grp IS NULL, grp"""  # noqa: S608 - constant fragments


def counts_query(dialect: Dialect) -> str:
    """SQL giving the live rows, the tombstones and the journal entries (``counts``)."""
    return f"""
SELECT (SELECT COUNT(*) FROM objects WHERE {dialect.is_live}),
       (SELECT COUNT(*) FROM objects WHERE {dialect.is_deleted}),
       (SELECT COUNT(*) FROM journal)"""  # noqa: S608 - constant fragments


# --- growth ----------------------------------------------------------------------------


# Journal kinds as SQL conditions (constants): a write of content, a removal.
_WRITES_SQL: Final = (
    f"(kind = '{EventKind.CREATED}' OR (kind = '{EventKind.RECONCILED}'"
    f" AND event_name = '{RECONCILE_FOUND}'))"
)


_REMOVES_SQL: Final = (
    f"(kind IN ('{EventKind.REMOVED}', '{EventKind.EXPIRED}') OR"
    f" (kind = '{EventKind.RECONCILED}' AND event_name = '{RECONCILE_GONE}'))"
)


def growth_query(
    placeholder: Callable[[int], str],
    day_sql: str,
    since: object,
    *,
    bucket: str | None,
    user_id: str | None,
) -> tuple[str, list[object]]:
    """SQL and parameters giving, per UTC day from ``since``, the columns of GrowthRow.

    Every write or removal is compared with the previous one of the same row (bucket,
    key, version) in sequencer order — window functions, so history from before the
    window counts too: a write after a write is an overwrite (no new object, the old
    bytes leave), a removal after a removal removes nothing. A user is the ``user_id`` of
    the object's row (removal events carry no metadata). ``day_sql`` turns ``event_time``
    into 'YYYY-MM-DD'; ``since`` is in the dialect's stored form.
    """
    params: list[object] = []

    def mark(value: object) -> str:
        params.append(value)
        return placeholder(len(params))

    in_bucket = f" AND bucket = {mark(bucket)}" if bucket is not None else ""
    from_since = mark(since)
    of_user = ""
    if user_id is not None:
        of_user = (
            " AND EXISTS (SELECT 1 FROM objects AS o WHERE o.bucket = changes.bucket"  # noqa: S608
            " AND o.key = changes.key AND o.version_id = changes.version_id"
            f" AND o.user_id = {mark(user_id)})"
        )
    sql = f"""
WITH changes AS (
    SELECT bucket, key, version_id, event_time, size,
           CASE WHEN {_WRITES_SQL} THEN 1 ELSE 0 END AS writes,
           LAG(CASE WHEN {_WRITES_SQL} THEN 1 ELSE 0 END) OVER w AS after_write,
           LAG(size) OVER w AS previous_size
    FROM journal
    WHERE ({_WRITES_SQL} OR {_REMOVES_SQL}){in_bucket}
    WINDOW w AS (PARTITION BY bucket, key, version_id ORDER BY sequencer, event_time, id)
)
SELECT {day_sql} AS day,
    CAST(SUM(CASE WHEN writes = 1 AND COALESCE(after_write, 0) = 0 THEN 1 ELSE 0 END)
         AS BIGINT),
    CAST(SUM(CASE WHEN writes = 1 THEN COALESCE(size, 0) ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN writes = 0 AND after_write = 1 THEN 1 ELSE 0 END) AS BIGINT),
    CAST(SUM(CASE WHEN after_write = 1 THEN COALESCE(previous_size, 0) ELSE 0 END) AS BIGINT)
FROM changes
WHERE event_time >= {from_since}{of_user}
GROUP BY day ORDER BY day"""  # noqa: S608 - constant fragments, values are parameters
    return sql, params


def every_day(rows: Iterable[GrowthRow], first: date, last: date) -> list[GrowthRow]:
    """One row per day from ``first`` to ``last``: days without changes get zeros."""
    by_day = {row.day: row for row in rows}
    count = (last - first).days + 1
    days = (first + timedelta(days=n) for n in range(max(count, 0)))
    return [by_day.get(day, GrowthRow(day)) for day in days]


# --- full-text search ------------------------------------------------------------------


# The text-search configurations PostgreSQL ships, by the language names and ISO codes
# transcribers report; anything else is searched word by word ("simple").
_SEARCH_CONFIGS: Final[Mapping[str, str]] = {
    **dict.fromkeys(("ru", "rus", "russian"), "russian"),
    **dict.fromkeys(("en", "eng", "english"), "english"),
    **dict.fromkeys(("de", "deu", "ger", "german"), "german"),
    **dict.fromkeys(("fr", "fra", "fre", "french"), "french"),
    **dict.fromkeys(("es", "spa", "spanish"), "spanish"),
    **dict.fromkeys(("it", "ita", "italian"), "italian"),
    **dict.fromkeys(("uk", "ukr", "ukrainian"), "simple"),
}


# Queries are matched in these configurations at once (OR), so a Russian and an English
# transcript are both found by their own stems, whatever language the query is in.
SEARCH_QUERY_CONFIGS: Final = ("russian", "english", "simple")


_WORD: Final = re.compile(r"\w+")


def search_config(language: str | None) -> str:
    """PostgreSQL's text-search configuration for a transcript's language. Pure."""
    if not language:
        return "simple"
    return _SEARCH_CONFIGS.get(language.strip().lower().split("-")[0], "simple")


def search_words(text: str) -> list[str]:
    """The words of a search text, lower-cased; InvalidInput when there are none. Pure.

    Only words are kept (no operators, quotes or wildcards from the user), so neither
    FTS5's query syntax nor PostgreSQL's can be tripped by what is typed.
    """
    words = _WORD.findall(text.lower())
    if not words:
        raise InvalidInput(f"search text {text!r} has no words to look for")
    return words


def fts5_query(text: str) -> str:
    """An FTS5 MATCH expression: every word of ``text``, each also as a prefix
    ("мир" finds "мира"; FTS5 has no Russian stemmer). Pure."""
    return " ".join(f'"{word}"*' for word in search_words(text))
