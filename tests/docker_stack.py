"""The stack from testcontainers, for machines where a Docker engine answers.

Same shape as infra/stack.py's local stack: Kafka (KRaft) first with its topics, then MinIO
with the Kafka notify target, queue_dir and synchronous events, then PostgreSQL. Credentials
are generated per session. CI on this project's machines has no engine and takes the local
path; this one is for laptops and Docker-enabled CI.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from testcontainers.community.kafka import KafkaContainer
from testcontainers.community.minio import MinioContainer
from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.network import Network

from infra.stack import DEFAULT_DLQ_TOPIC, DEFAULT_EVENTS_TOPIC, NOTIFY_TARGET_ID

KAFKA_IMAGE = "confluentinc/cp-kafka:7.9.0"
MINIO_IMAGE = "minio/minio:RELEASE.2025-09-07T16-13-09Z"
POSTGRES_IMAGE = "postgres:18-alpine"


async def _create_topics(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(DEFAULT_EVENTS_TOPIC, 4, 1), NewTopic(DEFAULT_DLQ_TOPIC, 1, 1)]
        )
    finally:
        await admin.close()


@contextmanager
def docker_stack() -> Iterator[dict[str, str]]:
    """Start the three containers on one network; yield the env the tests use."""
    access_key = "vox" + secrets.token_hex(8)
    secret_key = secrets.token_urlsafe(30)
    with ExitStack() as stack:
        network = stack.enter_context(Network())
        kafka = KafkaContainer(KAFKA_IMAGE).with_kraft().with_network(network)
        kafka.with_network_aliases("kafka")
        stack.enter_context(kafka)
        bootstrap = kafka.get_bootstrap_server()
        asyncio.run(_create_topics(bootstrap))

        target = NOTIFY_TARGET_ID
        minio = MinioContainer(MINIO_IMAGE, access_key=access_key, secret_key=secret_key)
        minio.with_network(network)
        minio.with_env("MINIO_ROOT_USER", access_key).with_env("MINIO_ROOT_PASSWORD", secret_key)
        minio.with_env("MINIO_API_SYNC_EVENTS", "on")
        # Inside the network Kafka's BROKER listener is kafka:9092.
        for name, value in {
            "ENABLE": "on",
            "BROKERS": "kafka:9092",
            "TOPIC": DEFAULT_EVENTS_TOPIC,
            "QUEUE_DIR": "/tmp/minio-events-queue",
            "QUEUE_LIMIT": "100000",
        }.items():
            minio.with_env(f"MINIO_NOTIFY_KAFKA_{name}_{target}", value)
        stack.enter_context(minio)

        postgres = stack.enter_context(
            PostgresContainer(POSTGRES_IMAGE, password=secrets.token_urlsafe(18), driver=None)
        )
        yield {
            "MINIO_ENDPOINT": f"{minio.get_container_host_ip()}:{minio.get_exposed_port(9000)}",
            "MINIO_ACCESS_KEY": access_key,
            "MINIO_SECRET_KEY": secret_key,
            "MINIO_USE_SSL": "false",
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_EVENTS_TOPIC": DEFAULT_EVENTS_TOPIC,
            "KAFKA_DLQ_TOPIC": DEFAULT_DLQ_TOPIC,
            "POSTGRES_URL": postgres.get_connection_url(),
        }
