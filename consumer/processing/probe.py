"""``audio-probe``: container and codec facts of a recording, read with mutagen.

Only the bytes the format needs are fetched (headers, and for OGG the last page), through
a ranged reader: a 2 GB file costs a few hundred KiB of reads and of memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import mutagen

from consumer.errors import ProcessingFailed
from consumer.processing.base import Job, SourceObject
from consumer.settings import Settings

# mutagen's class name → (container, codec); MP4's codec comes from the stream itself.
_FORMATS: Final[Mapping[str, tuple[str, str]]] = {
    "OggOpus": ("ogg", "opus"),
    "OggVorbis": ("ogg", "vorbis"),
    "OggFLAC": ("ogg", "flac"),
    "OggSpeex": ("ogg", "speex"),
    "WAVE": ("wav", "pcm"),
    "MP3": ("mp3", "mp3"),
    "EasyMP3": ("mp3", "mp3"),
    "MP4": ("mp4", "aac"),
    "EasyMP4": ("mp4", "aac"),
    "FLAC": ("flac", "flac"),
    "AAC": ("aac", "aac"),
    "AIFF": ("aiff", "pcm"),
}
SUPPORTED: Final = "OGG/Opus, OGG/Vorbis, WAV, MP3, M4A/AAC, FLAC"
OPUS_SAMPLE_RATE: Final = 48_000


class AudioProbe:
    name = "audio-probe"

    async def process(self, job: Job, source: SourceObject) -> Mapping[str, Any]:
        size = await source.size()
        if size == 0:
            raise ProcessingFailed("empty object (0 bytes): there is no audio to probe")
        return await asyncio.to_thread(_probe, source, size)

    async def close(self) -> None:
        return None


def create(settings: Settings) -> AudioProbe:
    """The entry point's factory: the probe needs no configuration."""
    return AudioProbe()


def _probe(source: SourceObject, size: int) -> dict[str, Any]:
    with source.open() as reader:
        try:
            audio = mutagen.File(reader)
        except mutagen.MutagenError as exc:
            raise ProcessingFailed(f"not readable as audio ({SUPPORTED}): {exc}") from exc
    if audio is None:
        raise ProcessingFailed(f"not a recognised audio format (supported: {SUPPORTED})")
    return describe(type(audio).__name__, audio.info, size)


def describe(kind: str, info: Any, size: int) -> dict[str, Any]:
    """The facts of a parsed file, in one shape for every format. Pure."""
    container, codec = _FORMATS.get(kind, (kind.lower(), kind.lower()))
    if kind in ("MP4", "EasyMP4"):
        codec = _mp4_codec(getattr(info, "codec", "") or "")
    duration = float(getattr(info, "length", 0.0) or 0.0)
    channels = int(getattr(info, "channels", 0) or 0)
    if duration <= 0 or channels <= 0:
        raise ProcessingFailed(f"{container} file without an audio stream (no duration)")
    bitrate = int(getattr(info, "bitrate", 0) or 0) or round(size * 8 / duration)
    sample_rate = int(getattr(info, "sample_rate", 0) or 0) or None
    if codec == "opus":
        sample_rate = OPUS_SAMPLE_RATE  # Opus always decodes at 48 kHz (RFC 7845)
    return {
        "container": container,
        "codec": codec,
        "duration_s": round(duration, 3),
        "sample_rate": sample_rate,
        "channels": channels,
        "bitrate": bitrate,
        "bits_per_sample": getattr(info, "bits_per_sample", None),
        "size": size,
    }


def _mp4_codec(code: str) -> str:
    """MP4 sample-entry codes as plain names ("mp4a.40.2" is AAC-LC)."""
    if code.startswith("mp4a"):
        return "aac"
    return {"alac": "alac", "ac-3": "ac3", "ec-3": "eac3"}.get(code, code or "unknown")
