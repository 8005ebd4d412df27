"""Everything MinIO at the package's boundary: clients built from the settings
(``connect``), what a failure means (``failures``: one table of S3 codes, one classifier)
and the one way to run a call from async code (``calls``: thread, translation, retries).
"""

from consumer.minio.calls import minio_call, translated
from consumer.minio.connect import minio_client, minio_http_pool, minio_ssl_context
from consumer.minio.failures import (
    MINIO_ERRORS,
    FailureKind,
    MinioFailure,
    as_error,
    classify_failure,
    describe_minio_failure,
    is_gone,
    minio_tls_problem,
)

__all__ = [
    "MINIO_ERRORS",
    "FailureKind",
    "MinioFailure",
    "as_error",
    "classify_failure",
    "describe_minio_failure",
    "is_gone",
    "minio_call",
    "minio_client",
    "minio_http_pool",
    "minio_ssl_context",
    "minio_tls_problem",
    "translated",
]
