"""Every Kafka client of the package (consumer, producer, admin) is built here, and only
here: brokers, encryption (SSL) and authentication (SASL PLAIN / SCRAM) from the settings.

``new_consumer``, ``new_producer`` and ``new_admin`` start each client from
``kafka_client_options(settings)``, so no client can forget the security settings; a test
(tests/test_architecture.py) fails if any other module constructs an aiokafka client.
``start_client`` starts one and turns aiokafka's bare "Unable to bootstrap" into the
reason (credentials refused, certificate not trusted) through ``kafka_security_failure``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

# Private, with aiokafka's version bounded in pyproject.toml: one connection opened by
# hand is the only way to learn why a bootstrap failed (aiokafka logs the cause and
# raises "Unable to bootstrap"); no public API opens a single broker connection.
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from consumer.errors import ConfigError, KafkaUnavailable
from consumer.retry import retry
from consumer.settings import Settings
from consumer.tls import ssl_error_detail

_TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
DIAGNOSE_TIMEOUT_S = 10.0
# A role that starts while Kafka is down tries again at most this far apart: it has
# nothing else to do, so it resumes within seconds of Kafka's return.
START_RETRY_CAP_S = 5.0
T = TypeVar("T")


def security_problems(settings: Settings) -> list[str]:
    """What is inconsistent in the Kafka security settings, one phrase each. Pure."""
    protocol = settings.kafka_security_protocol
    problems: list[str] = []
    if protocol in _SASL_PROTOCOLS:
        if not settings.kafka_sasl_username:
            problems.append(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME")
        if not settings.kafka_sasl_password.get_secret_value():
            problems.append(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_PASSWORD")
    tls_files = {
        "KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    if protocol not in _TLS_PROTOCOLS:
        named = [name for name, path in tls_files.items() if path is not None]
        if named:
            problems.append(
                f"{', '.join(named)} set but KAFKA_SECURITY_PROTOCOL={protocol} does not use "
                "TLS (SSL or SASL_SSL)"
            )
    elif settings.kafka_ssl_keyfile is not None and settings.kafka_ssl_certfile is None:
        problems.append("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate)")
    return problems


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (None otherwise): the broker's certificate and
    host name verified against KAFKA_SSL_CAFILE (or the system's CAs), with a client
    certificate when KAFKA_SSL_CERTFILE is set. Raises ConfigError."""
    if settings.kafka_security_protocol not in _TLS_PROTOCOLS:
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
        )
    except OSError as exc:  # ssl.SSLError is an OSError too
        files = ", ".join(
            f"{name}={path}"
            for name, path in (
                ("KAFKA_SSL_CAFILE", settings.kafka_ssl_cafile),
                ("KAFKA_SSL_CERTFILE", settings.kafka_ssl_certfile),
                ("KAFKA_SSL_KEYFILE", settings.kafka_ssl_keyfile),
            )
            if path is not None
        )
        raise ConfigError(
            f"Kafka TLS files unusable ({files or 'none set'}): {exc.strerror or exc}"
        ) from None
    return context


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client of the package starts from. Raises
    ConfigError when the security settings do not fit together or a TLS file is bad."""
    problems = security_problems(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    ssl_context = kafka_ssl_context(settings)
    if ssl_context is not None:
        options["ssl_context"] = ssl_context
    if settings.kafka_security_protocol in _SASL_PROTOCOLS:
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options


def new_consumer(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaConsumer:
    """An unstarted consumer with the security settings; ``options`` are aiokafka's
    consumer arguments (group_id, enable_auto_commit, ...). Raises ConfigError."""
    return AIOKafkaConsumer(**kafka_client_options(settings), client_id=client_id, **options)


def new_producer(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaProducer:
    """An unstarted producer with the security settings. Raises ConfigError."""
    return AIOKafkaProducer(**kafka_client_options(settings), client_id=client_id, **options)


def new_admin(settings: Settings, *, client_id: str, **options: Any) -> AIOKafkaAdminClient:
    """An unstarted admin client with the security settings. Raises ConfigError."""
    return AIOKafkaAdminClient(**kafka_client_options(settings), client_id=client_id, **options)


async def start_client(
    client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient, settings: Settings
) -> None:
    """Start ``client``; when it cannot, close it and raise KafkaUnavailable with one
    line: not retriable when the credentials or the broker's certificate were refused
    (the line says which), retriable when Kafka is unreachable."""
    try:
        await client.start()
    except KafkaError as exc:
        await close_client(client)
        reason = await kafka_security_failure(exc, settings)
        raise KafkaUnavailable(
            reason or kafka_unreachable(exc, settings), retriable=reason is None
        ) from exc


async def close_client(client: AIOKafkaConsumer | AIOKafkaProducer | AIOKafkaAdminClient) -> None:
    """Stop or close ``client``, ignoring Kafka's errors (a client that failed to start
    or lost its brokers has nothing left to flush)."""
    with contextlib.suppress(KafkaError):
        if isinstance(client, AIOKafkaAdminClient):
            await client.close()
        else:
            await client.stop()


async def topic_partitions(admin: AIOKafkaAdminClient, topic: str) -> list[int]:
    """The partitions of ``topic``, sorted; [] when there is no such topic. Asks for the
    metadata of every topic: naming one would let a broker with auto-creation on create
    it."""
    for described in await admin.describe_topics():
        if described["topic"] == topic and described["error_code"] == 0:
            return sorted(partition["partition"] for partition in described["partitions"])
    return []


def describe_security_failure(exc: BaseException, settings: Settings) -> str | None:
    """One line for an authentication or TLS failure of one broker connection; None when
    ``exc`` is neither. Never contains the password. Pure."""
    servers = settings.kafka_bootstrap_servers
    if isinstance(exc, ssl.SSLCertVerificationError):
        cafile = settings.kafka_ssl_cafile or "unset: the system CAs"
        return (
            f"Kafka TLS certificate not trusted at {servers}: "
            f"{ssl_error_detail(exc)} (KAFKA_SSL_CAFILE={cafile})"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"Kafka TLS handshake with {servers} failed: {ssl_error_detail(exc)} "
            f"(KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol})"
        )
    protocol, mechanism = settings.kafka_security_protocol, settings.kafka_sasl_mechanism
    if isinstance(exc, UnsupportedSaslMechanismError):
        return (
            f"Kafka at {servers} does not accept the SASL mechanism {mechanism} on that "
            f"listener (KAFKA_SASL_MECHANISM, KAFKA_SECURITY_PROTOCOL={protocol})"
        )
    if isinstance(exc, ConnectionRefusedError):
        return None  # nothing listens there (yet): an outage, not a listener of another kind
    if isinstance(exc, TimeoutError | ConnectionError) and protocol in _TLS_PROTOCOLS:
        # A broker's plaintext listener drops a TLS hello (or never answers it).
        return (
            f"Kafka at {servers} did not complete the TLS handshake: "
            f"{type(exc).__name__} (KAFKA_SECURITY_PROTOCOL={protocol}: does that listener "
            "serve TLS?)"
        )
    if isinstance(exc, IllegalSaslStateError):
        return (
            f"Kafka at {servers} does not authenticate on that listener "
            f"(KAFKA_SECURITY_PROTOCOL={protocol}: is it a SASL listener?)"
        )
    if isinstance(exc, SaslAuthenticationFailed | AuthenticationFailedError):
        detail = str(exc) or type(exc).__name__
        return (
            f"Kafka at {servers} refused the credentials of "
            f"KAFKA_SASL_USERNAME={settings.kafka_sasl_username} "
            f"({mechanism} over {protocol}): {detail}"
        )
    return None


async def kafka_security_failure(exc: BaseException, settings: Settings) -> str | None:
    """Why a client could not start, in one line, when the broker refused its credentials
    or certificate; None for any other failure.

    aiokafka logs the cause of a failed bootstrap and raises only "Unable to bootstrap",
    so with security settings in play one connection is opened again, with the same
    options, to the first broker, to learn whether the credentials or the certificate
    were refused."""
    if not isinstance(exc, KafkaConnectionError) or settings.kafka_security_protocol == "PLAINTEXT":
        return None
    options = kafka_client_options(settings)
    options.pop("bootstrap_servers")
    host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(host.strip("[]"), int(port), **options), DIAGNOSE_TIMEOUT_S
        )
    except (OSError, KafkaError, TimeoutError, ValueError) as cause:
        return describe_security_failure(cause, settings)
    conn.close()
    return None


def kafka_unreachable(exc: BaseException, settings: Settings) -> str:
    """The line for a Kafka client that could not start for any other reason."""
    return f"Kafka at {settings.kafka_bootstrap_servers} unreachable: {exc}"


async def start_when_reachable(
    start: Callable[[], Awaitable[T]], settings: Settings, stop: asyncio.Event
) -> T:
    """``start()`` (which makes and starts clients, raising KafkaUnavailable), tried again
    while Kafka is unreachable: an outage that begins before a role's first connection is
    waited out like one later in its run (no data loss: MinIO queues the events meanwhile).
    A refusal (credentials, certificate, settings; not retriable) is raised at once;
    StopRequested when ``stop`` is set while waiting."""
    return await retry(
        start,
        what="Kafka start",
        base_s=settings.index_retry_backoff_s,
        cap_s=START_RETRY_CAP_S,
        stop=stop,
    )
