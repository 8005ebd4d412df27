"""What every TLS client of the package (Kafka, MinIO, PostgreSQL) says about a failed
handshake: one home for the reading of Python's ssl errors."""

from __future__ import annotations

import ssl


def ssl_error_detail(error: ssl.SSLError) -> str:
    """The most specific text of an ssl error: OpenSSL's verify message, else its reason
    (both only set on errors the ssl module raised)."""
    return str(getattr(error, "verify_message", None) or getattr(error, "reason", None) or error)
