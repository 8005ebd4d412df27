"""One error base for the package, with a ``retriable`` flag that the retry loop reads.

Library errors (minio, aiokafka, databases) are translated at the boundary into these,
so callers branch on ``retriable`` instead of on a zoo of foreign exception types.
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of every error this package raises on purpose."""

    retriable: bool = False


class ConfigError(ConsumerError):
    """Settings or a configuration file are invalid; a person has to fix them."""


class InvalidInput(ConsumerError):
    """A caller passed something unusable (bad argument, bad file, bad event)."""


class ConnectionFailed(ConsumerError):
    """A server (MinIO, Kafka, the index) could not be reached; trying again may work."""

    retriable = True


class NotFound(ConsumerError):
    """The object, bucket or record asked for does not exist."""


class SetupFailed(ConsumerError):
    """Provisioning (buckets, notifications, topics) was refused by a server."""
