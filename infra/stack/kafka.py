"""Apache Kafka (KRaft, broker and controller in one JVM): jars from Maven Central through
infra/kafka/pom.xml, storage formatted once per state directory, then one broker with
six listeners on 127.0.0.1:

- PLAINTEXT: MinIO's notify target, the default settings, every test;
- SASL_PLAINTEXT with PLAIN (the generated user in the JAAS config);
- SSL: TLS with a server certificate of the stack's test CA (infra/stack/tls.py);
- SASL_SSL with SCRAM-SHA-512: the same user, its SCRAM credential written into the
  KRaft metadata by ``kafka-storage format --add-scram`` (the KRaft way; no ZooKeeper);
- FAULTS: PLAINTEXT, advertised at another port, where the fault suite's proxy listens;
- CONTROLLER (KRaft's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

from infra.stack.common import INFRA_DIR, StackError, say
from infra.stack.install import cache_dir, require_tool, run_logged
from infra.stack.process import run_checked
from infra.stack.server import Context
from infra.stack.state import Credentials, StackState
from infra.stack.tls import TlsFiles, ensure_test_ca, tls_files

KAFKA_POM = INFRA_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = INFRA_DIR / "kafka" / "log4j2.properties"
DEFAULT_EVENTS_TOPIC = "minio-events"
DEFAULT_DLQ_TOPIC = "minio-events-dlq"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# Written beside the data when the SCRAM user exists in the metadata (format time, or
# added later to a data dir formatted before the SASL_SSL listener existed).
SCRAM_MARKER = "scram-user"


def _pom_digest() -> str:
    return hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()[:12]


def ensure_kafka_jars() -> Path:
    """Copy the Kafka broker's jars from Maven Central into the cache (once per pom)."""
    libs = cache_dir() / "kafka" / _pom_digest() / "libs"
    marker = libs / ".complete"
    if marker.is_file():
        return libs
    require_tool(
        "java", "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
    )
    mvn = require_tool("mvn", "install Apache Maven (Debian: apt-get install maven)")
    say("fetching Apache Kafka jars with Maven (first time only)")
    if libs.exists():
        shutil.rmtree(libs)
    run_logged(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(KAFKA_POM),
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        cache_dir() / "logs" / "kafka-jars.log",
        dict(os.environ),
        "fetching Kafka jars",
    )
    marker.write_text("ok\n")
    return libs


def kafka_properties(state: StackState, data: Path, creds: Credentials, tls: TlsFiles) -> str:
    """server.properties of the one-node broker. Pure."""
    controller = f"127.0.0.1:{state.kafka_controller_port}"
    common = [
        f"PLAINTEXT://127.0.0.1:{state.kafka_port}",
        f"SASL_PLAINTEXT://127.0.0.1:{state.kafka_sasl_port}",
        f"SSL://127.0.0.1:{state.kafka_ssl_port}",
        f"SASL_SSL://127.0.0.1:{state.kafka_scram_port}",
        f"CONTROLLER://{controller}",
    ]
    listeners = ",".join([*common, f"FAULTS://127.0.0.1:{state.kafka_faults_port}"])
    # FAULTS is advertised where the fault proxy listens: clients that bootstrap there
    # are sent back there for every broker connection, never around the proxy.
    advertised = ",".join([*common, f"FAULTS://127.0.0.1:{state.kafka_faults_proxy_port}"])
    # PLAIN's server side: one user, its password from the stack's credentials. Java
    # properties escape backslashes; token_urlsafe/hex never produce quotes or backslashes.
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{creds.kafka_sasl_username}="{creds.kafka_sasl_password}";'
    )
    # SCRAM's server side reads the credentials from the cluster metadata.
    scram_jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={controller}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,"
            "SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,FAULTS:PLAINTEXT",
            "listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={plain_jaas}",
            f"listener.name.sasl_ssl.sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={scram_jaas}",
            # Both TLS listeners: the key and chain in one PEM file, no keystore password.
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls.keystore}",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.dedupe.buffer.size=1048577",
            "num.network.threads=1",
            "num.io.threads=2",
            "",
        ]
    )


def scram_credential(creds: Credentials) -> str:
    """The ``--add-scram`` / ``--add-config`` value for the stack's user. Pure."""
    name, password = creds.kafka_sasl_username, creds.kafka_sasl_password
    return f"{SCRAM_MECHANISM}=[name={name},password={password}]"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only the owner can read (it holds passwords)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def kafka_ready(port: int) -> bool:
    """A real metadata round-trip, not just an open port."""
    from aiokafka.admin import AIOKafkaAdminClient

    # Connection refusals while the broker boots are expected; keep them out of the terminal.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
        except Exception:  # any failure means "not ready yet"; the caller retries
            return False
        else:
            return True
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    return asyncio.run(probe())


def create_kafka_topics(port: int, wanted: dict[str, int]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    async def create() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=10000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, parts, 1) for name, parts in wanted.items() if name not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
            return True
        finally:
            await admin.close()

    return asyncio.run(create())


def _add_scram_user(ctx: Context) -> None:
    """The SCRAM user of a running broker whose metadata lacks it (the admin API over the
    PLAINTEXT listener; kafka-configs does the same). Reformatting instead would lose the
    topics and every event not consumed yet."""
    java = require_tool("java", "install a Java 17+ runtime")
    name, password = ctx.credentials.kafka_sasl_username, ctx.credentials.kafka_sasl_password
    run_checked(
        [
            java,
            "-cp",
            f"{ensure_kafka_jars()}/*",
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            f"127.0.0.1:{ctx.state.kafka_port}",
            "--alter",
            "--add-config",
            f"{SCRAM_MECHANISM}=[password={password}]",
            "--entity-type",
            "users",
            "--entity-name",
            name,
        ],
        ctx.logs / "kafka-scram.log",
        None,
        f"adding the Kafka SCRAM user {name}",
        secrets=(password,),
    )


class Kafka:
    name = "kafka"
    ports = (
        "kafka_port",
        "kafka_sasl_port",
        "kafka_ssl_port",
        "kafka_scram_port",
        "kafka_faults_port",
        "kafka_faults_proxy_port",
    )
    # KRaft stores the controller's address in its metadata log at format time.
    data_ports = ("kafka_controller_port",)
    # MinIO checks its notify target at start, so Kafka and the topics come first.
    others_wait = True
    stop_signal = signal.SIGTERM

    def install(self) -> Path:
        return ensure_kafka_jars()

    def start(self, ctx: Context, installed: Path) -> None:
        kafka_dir = ctx.state_dir / "kafka"
        data = kafka_dir / "data"
        props = kafka_dir / "server.properties"
        tls = ensure_test_ca(ctx.state_dir / "tls")
        # It holds the SASL user's password: never readable by others, not even briefly.
        _write_private(props, kafka_properties(ctx.state, data, ctx.credentials, tls))
        classpath = f"{installed}/*"
        java = require_tool("java", "install a Java 17+ runtime")
        if not (data / "meta.properties").is_file():
            shutil.rmtree(data, ignore_errors=True)
            (kafka_dir / SCRAM_MARKER).unlink(missing_ok=True)
            cluster_id = subprocess.run(
                [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            run_checked(
                [
                    java,
                    "-cp",
                    classpath,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    cluster_id,
                    "-c",
                    str(props),
                    "--add-scram",
                    scram_credential(ctx.credentials),
                ],
                ctx.logs / "kafka-format.log",
                None,
                "formatting Kafka storage",
                secrets=(ctx.credentials.kafka_sasl_password,),
            )
            (kafka_dir / SCRAM_MARKER).write_text(ctx.credentials.kafka_sasl_username + "\n")
        ctx.spawn(
            self.name,
            [
                java,
                "-Xms256m",
                "-Xmx512m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
                f"-Dkafka.logs.dir={ctx.logs}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ],
            dict(os.environ),
        )

    def ready(self, ctx: Context) -> bool:
        return kafka_ready(ctx.state.kafka_port)

    def after_ready(self, ctx: Context) -> None:
        """Create the events topic (partitioned) and the DLQ before MinIO starts, so the
        broker's auto-creation never makes a one-partition events topic; give data
        formatted before the SASL_SSL listener existed its SCRAM user."""
        marker = ctx.state_dir / "kafka" / SCRAM_MARKER
        if not marker.is_file():
            _add_scram_user(ctx)
            marker.write_text(ctx.credentials.kafka_sasl_username + "\n")
        wanted = {ctx.topics.events: ctx.topics.events_partitions, ctx.topics.dlq: 1}
        if not create_kafka_topics(ctx.state.kafka_port, wanted):
            raise StackError(f"could not create Kafka topics {sorted(wanted)}; see {ctx.logs}")

    def env(self, ctx: Context) -> dict[str, str]:
        state, creds = ctx.state, ctx.credentials
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_port}",
            # The other listeners of the same broker: to use one, set KAFKA_BOOTSTRAP_SERVERS
            # to it and KAFKA_SECURITY_PROTOCOL to its protocol (SASL_PLAINTEXT, SSL,
            # SASL_SSL), with KAFKA_SSL_CAFILE=$KAFKA_STACK_CAFILE for the TLS ones and
            # KAFKA_SASL_MECHANISM=SCRAM-SHA-512 for SASL_SSL. The SASL settings below are
            # ignored while the protocol is PLAINTEXT; the CA file is printed under a name
            # of its own, since KAFKA_SSL_CAFILE with PLAINTEXT is refused as a mistake.
            "KAFKA_SASL_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_sasl_port}",
            "KAFKA_SASL_MECHANISM": "PLAIN",
            "KAFKA_SASL_USERNAME": creds.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": creds.kafka_sasl_password,
            "KAFKA_SSL_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_ssl_port}",
            "KAFKA_SCRAM_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_scram_port}",
            "KAFKA_STACK_CAFILE": str(tls_files(ctx.state_dir / "tls").ca_file),
            # Network-fault drills: a proxy listening at the second address forwarding to
            # the first is the only way a client reaches the broker through FAULTS.
            "KAFKA_FAULTS_LISTENER": f"127.0.0.1:{state.kafka_faults_port}",
            "KAFKA_FAULTS_BOOTSTRAP_SERVERS": f"127.0.0.1:{state.kafka_faults_proxy_port}",
            "KAFKA_EVENTS_TOPIC": ctx.topics.events,
            "KAFKA_DLQ_TOPIC": ctx.topics.dlq,
        }
