"""One error base for the package, with a ``retriable`` flag that the retry loop reads.

Library errors (minio, aiokafka, databases) are translated at the boundary into these,
so callers branch on ``retriable`` instead of on a zoo of foreign exception types. Every
exception the package defines is here, so a reader finds them in one place; the modules
that raise them import them from here.
"""

from __future__ import annotations


class ConsumerError(Exception):
    """Base of every error this package raises on purpose.

    ``retriable`` says whether trying again may help; each class has a default, and an
    instance may override it (an upload refused by policy is final, one cut by a network
    blip is not).
    """

    retriable: bool = False

    def __init__(self, *args: object, retriable: bool | None = None) -> None:
        super().__init__(*args)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(ConsumerError):
    """Settings or a configuration file are invalid; a person has to fix them."""


class InvalidInput(ConsumerError):
    """A caller passed something unusable (bad argument, bad file, bad event)."""


class ConnectionFailed(ConsumerError):
    """A server (MinIO, Kafka, the index) could not be reached; trying again may work."""

    retriable = True


class TlsFailed(ConnectionFailed):
    """A TLS handshake failed or the server's certificate is not trusted: the settings or
    the server must change, so trying again cannot help (a ConnectionFailed all the same:
    no request reached the server)."""

    retriable = False


class NotFound(ConsumerError):
    """The object, bucket or record asked for does not exist."""


class SetupFailed(ConsumerError):
    """Provisioning (buckets, notifications, topics) was refused by a server."""


class UploadFailed(ConsumerError):
    """An upload did not complete (refused, cut, or its verification failed)."""


class DownloadFailed(ConsumerError):
    """A download or stream of an object did not complete."""


class ReconcileFailed(ConsumerError):
    """MinIO, the index or Kafka failed during a reconcile."""


class ProcessingFailed(ConsumerError):
    """A permanent failure (corrupt or unsupported audio, object gone, too large): the job
    fails at once with this message, which a person should understand."""


class ProcessingRetriable(ConsumerError):
    """A transient failure (timeout, 5xx, connection refused): the job is retried."""

    retriable = True


class StopRequested(ConsumerError):
    """Shutdown was asked for while waiting to retry; the operation was not completed."""


class RetriesExhausted(ConsumerError):
    """A retriable failure persisted past the allowed attempts; ``__cause__`` is the last."""


class KafkaUnavailable(ConnectionFailed):
    """The broker could not take a write or an offset commit right now (retriable)."""


class SweepBlocked(ConsumerError):
    """The sweeper refused to delete (the index may be stale)."""


class IndexUnavailable(ConnectionFailed):
    """The index database cannot be reached or is locked right now; retrying may work."""


class IndexWriteFailed(ConsumerError):
    """The index refused a read or write for a reason retrying cannot fix.

    Examples: a corrupt SQLite file, a schema newer than this consumer, bad credentials.
    """


class LeaseLost(ConsumerError):
    """The job's lease went to another process (this one stopped renewing it in time)."""

    retriable = False


# Signals, not errors: raised inside a worker thread to stop it once the task awaiting
# it was cancelled (Ctrl-C); they never reach a caller.


class UploadCancelled(Exception):
    """Raised inside minio-py's upload thread once the awaiting task was cancelled, so
    that minio-py aborts the multipart upload instead of finishing it."""


class DigestCancelled(Exception):
    """Raised inside the hashing thread once ``cancelled`` is set (Ctrl-C)."""
