"""The MinIO client factory and failure lines under their first name: ``consumer.minio``
holds them now; this module stays for the imports that name it."""

from consumer.minio.connect import (
    CONNECT_TIMEOUT_S,
    minio_client,
    minio_http_pool,
    minio_ssl_context,
)
from consumer.minio.failures import describe_minio_failure, minio_tls_problem, ssl_error_detail

__all__ = [
    "CONNECT_TIMEOUT_S",
    "describe_minio_failure",
    "minio_client",
    "minio_http_pool",
    "minio_ssl_context",
    "minio_tls_problem",
    "ssl_error_detail",
]
