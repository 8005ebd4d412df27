"""Uploads through the published MinIO port, and reading the probe's results back."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

from minio import Minio

from tests.audio import wav
from tests.containers.compose import ComposeProject

AUDIO_BUCKET = "voxpersona-audio"
RESULTS_BUCKET = "processed-results"


def host_minio(project: ComposeProject) -> Minio:
    return Minio(
        f"127.0.0.1:{project.ports['MINIO_PORT']}",
        access_key=project.minio_access_key,
        secret_key=project.minio_secret_key,
        secure=False,
    )


def upload_wav(client: Minio, seconds: float, rate: int) -> tuple[str, str | None]:
    """A real WAV recording into the audio bucket; (key, version id)."""
    key = f"users/u-{uuid.uuid4().hex[:6]}/{uuid.uuid4().hex[:8]}.wav"
    body = wav(seconds=seconds, rate=rate)
    result = client.put_object(
        AUDIO_BUCKET, key, io.BytesIO(body), len(body), content_type="audio/wav"
    )
    return key, result.version_id


def probe_result(client: Minio, key: str, version_id: str | None) -> dict[str, Any]:
    """The audio-probe result document the worker stored for that upload."""
    name = f"{AUDIO_BUCKET}/{key}/{version_id or 'null'}/audio-probe.json"
    response = client.get_object(RESULTS_BUCKET, name)
    try:
        document: dict[str, Any] = json.loads(response.read())
    finally:
        response.close()
        response.release_conn()
    return document
