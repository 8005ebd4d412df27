"""The stack from testcontainers, for machines where a Docker engine answers.

Same shape as the local stack of infra/stack/: Kafka (KRaft) first with its topics, then MinIO
with the Kafka notify target, queue_dir and synchronous events, then PostgreSQL. Credentials
are generated per session.

The images are those of docker-compose.yml and take the same variables (KAFKA_IMAGE,
MINIO_IMAGE, POSTGRES_IMAGE; defaults: the pinned upstream images). Kafka is configured by
the KAFKA_* variables that apache/kafka and the local stand-in (infra/docker) both read.
CI's main run takes the local path (its engine is on a private socket); the container suite
(tests/containers/test_testcontainers.py) runs an integration module through this one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from testcontainers.community.minio import MinioContainer
from testcontainers.community.postgres import PostgresContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import LogMessageWaitStrategy

from infra.stack import DEFAULT_DLQ_TOPIC, DEFAULT_EVENTS_TOPIC, NOTIFY_TARGET_ID

KAFKA_IMAGE = os.environ.get("KAFKA_IMAGE", "apache/kafka:4.1.1")
MINIO_IMAGE = os.environ.get("MINIO_IMAGE", "minio/minio:RELEASE.2025-09-07T16-13-09Z")
POSTGRES_IMAGE = os.environ.get("POSTGRES_IMAGE", "postgres:18-alpine")
KAFKA_START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _kafka(network: Network) -> tuple[DockerContainer, str]:
    """Single-node KRaft Kafka; the host listener is published on a port chosen here, so
    the broker can advertise it before it starts."""
    host_port = _free_port()
    kafka = DockerContainer(KAFKA_IMAGE).with_network(network).with_network_aliases("kafka")
    kafka.with_bind_ports(9094, host_port)
    settings = {
        "CLUSTER_ID": "4L6g3nShT-eMCtK--X86sw",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@kafka:9093",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093,HOST://:9094",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://kafka:9092,HOST://127.0.0.1:{host_port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,HOST:PLAINTEXT"
        ),
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    for name, value in settings.items():
        kafka.with_env(name, value)
    kafka.waiting_for(
        LogMessageWaitStrategy("Kafka Server started").with_startup_timeout(KAFKA_START_TIMEOUT_S)
    )
    return kafka, f"127.0.0.1:{host_port}"


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
        kafka, bootstrap = _kafka(network)
        stack.enter_context(kafka)
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
