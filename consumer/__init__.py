"""VoxPersona bucket-notification consumer.

MinIO publishes object-created / object-removed events to Kafka; this package consumes
them to keep a metadata index, start processing of new audio and enforce retention.
"""

from __future__ import annotations

__version__ = "0.1.0"
