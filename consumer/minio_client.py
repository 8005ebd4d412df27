"""Building the MinIO client from settings (the only place that knows about TLS and timeouts)."""

from __future__ import annotations

import ssl

import urllib3
from minio import Minio

from consumer.settings import Settings

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


def minio_client(settings: Settings) -> Minio:
    """A minio-py client with bounded timeouts.

    urllib3's own retries are off: retrying is decided by our retry loop, which knows
    which errors are worth it.
    """
    ssl_context = None
    if settings.minio_use_ssl:
        ssl_context = ssl.create_default_context(
            cafile=str(settings.minio_cert_path) if settings.minio_cert_path else None
        )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
        retries=False,
        maxsize=16,
        ssl_context=ssl_context,
    )
    return Minio(
        settings.minio_endpoint,
        access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key.get_secret_value(),
        secure=settings.minio_use_ssl,
        region=settings.minio_region,
        http_client=http,
    )
