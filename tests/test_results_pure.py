"""Results as the bot sees them, without any server: keys, documents, transcripts, the
feed's filter, the `result` verb's lines, and the search helpers of the index."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from consumer.cli.client_verbs import outcome_line
from consumer.client.feed import FeedFilter
from consumer.errors import InvalidInput
from consumer.events import EventKind, ObjectEvent
from consumer.index import JobRequest, Transcript
from consumer.index.sql import fts5_query, search_config, search_words
from consumer.processing.base import Job
from consumer.processing.worker import result_key
from consumer.results import (
    ProcessedResult,
    ResultLocation,
    parse_result_key,
    result_location_key,
    transcript_of,
)


def request(version_id: str = "v7", key: str = "user_1/a b/c.ogg") -> JobRequest:
    return JobRequest("audio", key, version_id, "transcribe", "1", "e", 3)


class TestResultKeys:
    @pytest.mark.parametrize("version_id", ["v7", ""])
    @pytest.mark.parametrize("key", ["user_1/a b/c.ogg", "x.ogg", "юникод/голос+1.ogg"])
    def test_the_workers_key_parses_back_to_its_source(self, version_id: str, key: str) -> None:
        job = Job(request(version_id, key), "audio/ogg", "1", datetime(2026, 1, 1, tzinfo=UTC))
        location = ResultLocation("audio", key, version_id, "transcribe")
        assert result_location_key(location) == result_key(job)
        assert parse_result_key(result_key(job)) == location

    @pytest.mark.parametrize(
        "key", ["a/b/transcribe.json", "a/k/v/.json", "a/k/v/p.txt", "/k/v/p.json", "a//v/p.json"]
    )
    def test_other_keys_are_not_results(self, key: str) -> None:
        assert parse_result_key(key) is None


class TestTranscripts:
    def test_text_and_language_of_a_result(self) -> None:
        result = {"text": "привет, мир", "language": "ru", "model": "whisper"}
        assert transcript_of(request(), result) == Transcript(
            "audio", "user_1/a b/c.ogg", "v7", "transcribe", "привет, мир", "ru"
        )
        assert transcript_of(request(), {"text": "hi", "language": None}) == Transcript(
            "audio", "user_1/a b/c.ogg", "v7", "transcribe", "hi", None
        )

    @pytest.mark.parametrize("result", [{}, {"text": "  "}, {"text": 3}, {"codec": "opus"}])
    def test_results_without_text_index_nothing(self, result: dict[str, object]) -> None:
        assert transcript_of(request(), result) is None

    @pytest.mark.parametrize(
        ("language", "config"),
        [("ru", "russian"), ("Russian", "russian"), ("en-US", "english"), ("english", "english"),
         (None, "simple"), ("", "simple"), ("xx", "simple")],
    )  # fmt: skip
    def test_search_configuration_by_language(self, language: str | None, config: str) -> None:
        assert search_config(language) == config

    def test_only_words_reach_the_index(self) -> None:
        assert search_words('Бюджет "проекта" OR -x*') == ["бюджет", "проекта", "or", "x"]
        assert fts5_query("NEAR(мир)") == '"near"* "мир"*'
        with pytest.raises(InvalidInput):
            search_words(' -*" ')


def result_event(
    key: str, *, bucket: str = "res", kind: EventKind = EventKind.CREATED
) -> ObjectEvent:
    return ObjectEvent(
        bucket=bucket,
        key=key,
        event_name="s3:ObjectCreated:Put"
        if kind is EventKind.CREATED
        else "s3:ObjectRemoved:Delete",
        kind=kind,
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        sequencer="1",
    )


class TestFeedFilter:
    def test_keeps_new_results_that_match(self) -> None:
        wanted = FeedFilter("res", bucket="audio", processors=frozenset({"transcribe"}))
        location = wanted.wanted(result_event("audio/k.ogg/null/transcribe.json"))
        assert location == ResultLocation("audio", "k.ogg", "", "transcribe")

    @pytest.mark.parametrize(
        "event",
        [
            result_event("audio/k.ogg/null/audio-probe.json"),
            result_event("other/k.ogg/null/transcribe.json"),
            result_event("audio/k.ogg/null/transcribe.json", bucket="audio"),
            result_event("audio/k.ogg/null/transcribe.json", kind=EventKind.REMOVED),
            result_event("audio/notes.txt"),
        ],
    )
    def test_drops_everything_else(self, event: ObjectEvent) -> None:
        wanted = FeedFilter("res", bucket="audio", processors=frozenset({"transcribe"}))
        assert wanted.wanted(event) is None

    def test_a_key_filter(self) -> None:
        wanted = FeedFilter("res", key="u/a.ogg")
        assert wanted.wanted(result_event("b/u/a.ogg/v1/p.json")) is not None
        assert wanted.wanted(result_event("b/u/b.ogg/v1/p.json")) is None


class TestOutcomeLines:
    def test_a_transcript_a_result_and_a_failure(self) -> None:
        done = ProcessedResult(
            "b", "k", "", "transcribe", "done", document={"result": {"text": "привет,\nмир"}}
        )
        probed = ProcessedResult(
            "b", "k", "", "audio-probe", "done", document={"result": {"codec": "opus"}}
        )
        failed = ProcessedResult("b", "k", "", "transcribe", "failed", error="audio too short")
        assert outcome_line(done) == "transcribe   done   привет, мир\n"
        assert outcome_line(probed) == 'audio-probe  done   {"codec": "opus"}\n'
        assert outcome_line(failed) == "transcribe   failed audio too short\n"
        assert failed.as_dict()["result"] is None
        assert done.as_dict()["result"] == {"text": "привет,\nмир"}
        assert done.text == "привет,\nмир"
