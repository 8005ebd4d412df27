"""Building MinIO clients from settings: the only place that knows about TLS and timeouts.

Every MinIO connection of the package goes through ``minio_http_pool``: minio-py's
``Minio`` (``minio_client``), and an admin client (``minio.minioadmin.MinioAdmin`` takes
the same pool as ``http_client``). With ``MINIO_USE_SSL=true`` the pool verifies the
server's certificate and host name against ``MINIO_CERT_PATH`` (a PEM CA bundle), or the
system's CAs when it is unset.
"""

from __future__ import annotations

import ssl

import urllib3
from minio import Minio

from consumer.errors import ConfigError
from consumer.settings import Settings

CONNECT_TIMEOUT_S = 5.0


def minio_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of MinIO connections (None without ``MINIO_USE_SSL``): certificate
    and host name verified, against ``MINIO_CERT_PATH`` when set. Raises ConfigError when
    that file cannot be read as PEM certificates."""
    if not settings.minio_use_ssl:
        return None
    cafile = settings.minio_cert_path
    try:
        # Certificates required and host names checked: create_default_context's defaults.
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    except OSError as exc:  # ssl.SSLError is an OSError too (not PEM, no certificate in it)
        raise ConfigError(
            f"MINIO_CERT_PATH={cafile} is not a readable PEM CA bundle: {exc.strerror or exc}"
        ) from None


def minio_http_pool(settings: Settings, *, maxsize: int = 16) -> urllib3.PoolManager:
    """The urllib3 pool for MinIO: bounded timeouts, TLS per the settings.

    urllib3's own retries are off: retrying is decided by our retry loop, which knows
    which errors are worth it. Raises ConfigError (see ``minio_ssl_context``).
    """
    ssl_context = minio_ssl_context(settings)
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=settings.minio_read_timeout_s),
        retries=False,
        maxsize=maxsize,
        ssl_context=ssl_context,
        cert_reqs="CERT_REQUIRED" if ssl_context is not None else None,
    )


def minio_client(settings: Settings, pool: urllib3.PoolManager | None = None) -> Minio:
    """A minio-py client over ``pool`` (default: ``minio_http_pool(settings)``). Raises
    ConfigError."""
    return Minio(
        settings.minio_endpoint,
        access_key=settings.minio_access_key,
        secret_key=settings.minio_secret_key.get_secret_value(),
        secure=settings.minio_use_ssl,
        region=settings.minio_region,
        http_client=pool if pool is not None else minio_http_pool(settings),
    )
