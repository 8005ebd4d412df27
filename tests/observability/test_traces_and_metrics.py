"""What an SRE and a support person see, checked on the real stack with real traffic
(conftest.py): one trace per upload in Zipkin, from the bot to the transcript; every
dashboard panel's query answered by Prometheus; the dashboard drawn; an object's story."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import pytest

from infra.stack.prometheus import DASHBOARD, dashboard_panels
from tests.integration.test_cli_e2e import json_rows, run_cli
from tests.observability.browser import rendered_dom, screenshot
from tests.observability.conftest import Observed, get_json, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.observed]

# What one upload's trace holds once the object is indexed, probed and transcribed.
_PROCESSED = {"index event", "process audio-probe", "process transcribe"}
_MINIO_CALLS = {"s3.headobject", "s3.getobject", "s3.putobject"}


def _trace(observed: Observed, trace_id: str) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = get_json(f"{observed.zipkin_url}/api/v2/trace/{trace_id}") or []
    return spans


def _complete_trace(observed: Observed, trace_id: str, root: str) -> list[dict[str, Any]]:
    def complete() -> list[dict[str, Any]] | None:
        spans = _trace(observed, trace_id)
        names = {span.get("name") for span in spans}
        return spans if {root, *_PROCESSED, *_MINIO_CALLS} <= names else None

    spans: list[dict[str, Any]] = wait_until(
        complete, f"trace {trace_id} with {root}, indexing, processing and MinIO calls", 90
    )
    return spans


def _roots(spans: Sequence[dict[str, Any]]) -> list[str]:
    return [span["name"] for span in spans if not span.get("parentId")]


def test_an_upload_with_the_cli_roots_its_objects_trace(observed: Observed) -> None:
    spans = _complete_trace(observed, observed.upload_trace_id, "upload")
    assert _roots(spans) == ["upload"]
    services = {(span["name"], span["localEndpoint"]["serviceName"]) for span in spans}
    assert ("upload", "voxpersona-cli") in services
    assert ("s3.putobject", "voxpersona-cli") in services  # the upload's own PutObject
    assert ("index event", "voxpersona-consumer") in services
    upload = next(span for span in spans if span["name"] == "upload")
    assert upload["tags"]["aws.s3.key"] == observed.uploaded_key


def test_the_bots_upload_is_one_trace_in_zipkins_ui(observed: Observed) -> None:
    trace_id = observed.presign_trace_id
    spans = _complete_trace(observed, trace_id, "presign")
    assert _roots(spans) == ["presign"]

    # Found the way a person finds it: the search page (criteria in its URL, as Zipkin's
    # own "run query" puts them there) lists it, linked to its page.
    criteria = {
        "serviceName": "voxpersona-cli",
        "spanName": "presign",
        "lookback": "1h",
        "endTs": str(int(time.time() * 1000) + 60_000),
        "limit": "50",
    }
    search = f"{observed.zipkin_url}/zipkin/?" + urllib.parse.urlencode(criteria)
    assert f"traces/{trace_id}" in rendered_dom(search)
    screenshot(search, observed.artifacts / "zipkin-search.png", height=600)

    # Shown: the trace page draws every span of it, bot to transcript.
    page = f"{observed.zipkin_url}/zipkin/traces/{trace_id}"
    dom = rendered_dom(page)
    for name in ("presign", *_PROCESSED, *_MINIO_CALLS):
        assert name in dom, f"{name} is not on the trace page"
    assert "voxpersona-cli" in dom
    assert "voxpersona-consumer" in dom
    screenshot(page, observed.artifacts / "zipkin-trace.png", height=720)


def _query(observed: Observed, expr: str) -> dict[str, Any]:
    url = f"{observed.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer: dict[str, Any] = get_json(url) or {"status": "unreachable"}
    return answer


def _empty_or_invalid(observed: Observed) -> dict[str, str]:
    """Every dashboard query that fails or returns nothing, with why."""
    dashboard = json.loads(DASHBOARD.read_text())
    problems = {}
    for panel in dashboard_panels(dashboard):
        for expr in panel.queries:
            answer = _query(observed, expr)
            if answer.get("status") != "success":
                problems[f"{panel.title}: {expr}"] = str(answer.get("error", answer["status"]))
            elif not answer["data"]["result"]:
                problems[f"{panel.title}: {expr}"] = "no series"
    return problems


def test_every_dashboard_panel_answers_with_data(observed: Observed) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert len(list(dashboard_panels(dashboard))) >= 20  # the panels are all read
    problems: dict[str, str] = {}

    def all_answered() -> bool:
        problems.clear()
        problems.update(_empty_or_invalid(observed))
        return not problems

    try:
        wait_until(all_answered, "every dashboard panel to have data", 120)
    except AssertionError:
        pytest.fail(
            "panels without data or with invalid queries:\n" + json.dumps(problems, indent=1)
        )


def test_an_invalid_query_is_reported_not_passed(observed: Observed) -> None:
    assert _query(observed, "sum(rate(consumer_events_total[1m])")["status"] == "error"
    assert _query(observed, "sum(no_such_metric_total)")["data"]["result"] == []


def test_the_dashboard_rendered_in_a_browser_has_no_empty_panel(observed: Observed) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = len(list(dashboard_panels(dashboard)))
    wait_until(lambda: not _empty_or_invalid(observed), "every panel to have data", 120)
    dom = rendered_dom(observed.consoles_url, width=1200, height=4000)
    assert "No timeseries returned" not in dom
    assert "Error loading data" not in dom
    assert dom.count("<svg") >= panels  # each panel drew its graph
    screenshot(observed.consoles_url, observed.artifacts / "dashboard.png", width=1200, height=1400)


def _history(observed: Observed, bucket: str, key: str) -> list[dict[str, Any]]:
    """The object's history; none yet while its first event is not indexed."""
    done = run_cli(observed.env, "history", f"{bucket}/{key}", "--json")
    if done.returncode != 0 and "has no history" in done.stderr:
        return []
    return json_rows(done)


def test_history_tells_a_dead_lettered_recordings_story(observed: Observed) -> None:
    def failed_story() -> list[dict[str, Any]] | None:
        rows = _history(observed, observed.audio_bucket, observed.dead_lettered_key)
        return rows if any(row["what"].startswith("transcribe failed") for row in rows) else None

    rows = wait_until(failed_story, "the transcription to fail", 90)
    created = rows[0]
    assert created["source"] == "journal"
    assert created["what"] == "s3:ObjectCreated:Put"
    assert created["source_ip"] == "127.0.0.1"
    assert created["principal_id"]
    assert "minio-py" in created["user_agent"]
    assert created["kafka"]["topic"]
    assert created["origin"].startswith(created["kafka"]["topic"])
    jobs = {row["processor"]: row for row in rows if row["source"] == "job"}
    assert jobs["audio-probe"]["status"] == "done"
    assert jobs["audio-probe"]["result"]
    assert jobs["transcribe"]["status"] == "failed"
    assert jobs["transcribe"]["attempts"] == 2  # MINIO_MAX_RETRIES=1: one retry
    assert "503" in jobs["transcribe"]["error"]
    assert [row["at"] for row in rows] == sorted(row["at"] for row in rows)


def test_history_shows_the_retention_decision_that_removed_an_object(observed: Observed) -> None:
    bucket = observed.env["MINIO_BUCKET_NAME"]

    def removed_story() -> list[dict[str, Any]] | None:
        rows = _history(observed, bucket, observed.expired_key)
        return rows if any(row["source"] == "retention" for row in rows) else None

    rows = wait_until(removed_story, "the sweeper to remove the scratch file", 90)
    assert [row["source"] for row in rows] == ["journal", "journal", "retention"]
    assert rows[0]["what"].startswith("s3:ObjectCreated:")
    assert rows[1]["what"].startswith("s3:ObjectRemoved:")
    assert rows[2]["actor"] == "sweeper"
    assert rows[2]["policy"] == "scratch"
    text = run_cli(observed.env, "history", f"{bucket}/{observed.expired_key}")
    assert text.returncode == 0, text.stderr
    assert "removed by the retention sweeper (policy scratch)" in text.stdout
    assert "retention: scratch:" in text.stdout
