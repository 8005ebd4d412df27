"""Real audio files for tests, generated on the fly: WAV with the standard library, the
rest encoded by FFmpeg's own encoders through PyAV (libopus, libmp3lame, flac, aac)."""

from __future__ import annotations

import io
import math
import struct
import wave
from typing import Final

import av

# format name -> (container, codec, sample rate)
FORMATS: Final = {
    "opus": ("ogg", "libopus", 48_000),
    "mp3": ("mp3", "libmp3lame", 44_100),
    "flac": ("flac", "flac", 44_100),
    "m4a": ("ipod", "aac", 44_100),
}


def tone(seconds: float, rate: int, channels: int = 1, hz: float = 440.0) -> bytes:
    """Signed 16-bit little-endian PCM of a sine tone, interleaved."""
    count = int(seconds * rate)
    samples = (int(12_000 * math.sin(2 * math.pi * hz * n / rate)) for n in range(count))
    return b"".join(struct.pack("<h", s) * channels for s in samples)


def wav(seconds: float = 1.0, rate: int = 16_000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(tone(seconds, rate, channels))
    return buffer.getvalue()


def encoded(name: str, seconds: float = 1.0, channels: int = 1) -> bytes:
    """``seconds`` of tone in format ``name`` (a key of FORMATS)."""
    container, codec, rate = FORMATS[name]
    layout = "mono" if channels == 1 else "stereo"
    pcm = tone(seconds, rate, channels)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream = output.add_stream(codec, rate=rate, layout=layout)
        assert isinstance(stream, av.AudioStream)  # an audio codec makes an audio stream
        chunk = 1024
        bytes_per_frame = 2 * channels
        for index, start in enumerate(range(0, len(pcm), chunk * bytes_per_frame)):
            piece = pcm[start : start + chunk * bytes_per_frame]
            frame = av.AudioFrame(
                format="s16", layout=layout, samples=len(piece) // bytes_per_frame
            )
            frame.planes[0].update(piece)
            frame.sample_rate = rate
            frame.pts = index * chunk
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return buffer.getvalue()
