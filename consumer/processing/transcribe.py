"""``transcribe``: a client of an OpenAI-compatible ``/v1/audio/transcriptions`` endpoint.

Off unless TRANSCRIBE_BASE_URL is set: the project never calls out on its own. 429 and 5xx
answers, timeouts and connection errors are transient (retried by the worker); other 4xx
answers are permanent, with the API's own message. The API key only travels in the
Authorization header; it is never logged.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Mapping
from typing import Any, Final

import httpx

from consumer.errors import ProcessingFailed, ProcessingRetriable
from consumer.processing.base import Job, SourceObject
from consumer.settings import Settings

_PATH: Final = "/audio/transcriptions"


def endpoint_url(base_url: str) -> str:
    """The transcriptions URL for a base given with or without its ``/v1``. Pure."""
    base = base_url.rstrip("/")
    return base + _PATH if base.endswith("/v1") else base + "/v1" + _PATH


def describe_answer(status: int, body: str) -> str:
    """The API's error message (OpenAI's ``{"error": {"message": …}}``) or the body's
    start, on one line. Pure."""
    message = body.strip()
    try:
        parsed = httpx.Response(status, content=body.encode()).json()
        error = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(error, dict) and error.get("message"):
            message = str(error["message"])
        elif isinstance(error, str):
            message = error
    except ValueError:
        pass
    return " ".join(message.split())[:300] or "(empty body)"


class Transcriber:
    name = "transcribe"

    def __init__(self, settings: Settings, base_url: str) -> None:
        self._url = endpoint_url(base_url)
        self._model = settings.transcribe_model
        self._max_bytes = settings.transcribe_max_bytes
        self._timeout_s = settings.transcribe_timeout_s
        key = settings.transcribe_api_key.get_secret_value()
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.transcribe_timeout_s, connect=10.0),
            headers={"Authorization": f"Bearer {key}"} if key else {},
        )

    def __repr__(self) -> str:
        return f"Transcriber({self._url!r}, model={self._model!r})"

    async def process(self, job: Job, source: SourceObject) -> Mapping[str, Any]:
        audio = await source.read_all(self._max_bytes)
        if not audio:
            raise ProcessingFailed("empty object (0 bytes): there is nothing to transcribe")
        files = {"file": (posixpath.basename(job.key), audio, job.content_type or "audio/ogg")}
        form = {"model": self._model, "response_format": "json"}
        try:
            # httpx's timeouts bound each read and write; an answer that trickles in a
            # byte at a time would pass them all. The whole request ends within this.
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(self._url, files=files, data=form)
        except TimeoutError as exc:
            raise ProcessingRetriable(
                f"transcription API did not answer within {self._timeout_s:g} s"
            ) from exc
        except httpx.TimeoutException as exc:
            raise ProcessingRetriable(
                f"transcription API timed out ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise ProcessingRetriable(f"transcription API unreachable: {exc}") from exc
        return self._result(response)

    def _result(self, response: httpx.Response) -> Mapping[str, Any]:
        status = response.status_code
        if status == 429 or status >= 500:
            raise ProcessingRetriable(
                f"transcription API answered {status}: {describe_answer(status, response.text)}"
            )
        if status >= 400:
            raise ProcessingFailed(
                f"transcription API refused the audio ({status}):"
                f" {describe_answer(status, response.text)}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ProcessingRetriable("transcription API answered with something not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            raise ProcessingFailed("transcription API answered without a 'text' field")
        return {
            "text": body["text"],
            "model": self._model,
            "language": body.get("language"),
            "duration_s": body.get("duration"),
        }

    async def close(self) -> None:
        await self._client.aclose()


def create(settings: Settings) -> Transcriber | None:
    """The entry point's factory: None (processor off) while TRANSCRIBE_BASE_URL is unset."""
    if not settings.transcribe_base_url:
        return None
    return Transcriber(settings, settings.transcribe_base_url)
