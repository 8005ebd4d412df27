"""Clusters as users run them, from the stack's cached binaries: Apache Kafka of three KRaft
nodes (each broker and controller, replication factor 3, ``min.insync.replicas`` 2), and
a distributed MinIO of four nodes on the loopback addresses 127.0.0.1-127.0.0.4, each
with its own drive and its own event ``queue_dir``. For the fault suite's distributed
scenarios (tests/faults, ``-m cluster``), which kill one node with SIGKILL and start it
again; also usable by hand::

    with KafkaCluster(Path("/tmp/k")) as kafka:
        print(kafka.bootstrap)

Every node is a process in a session of its own; ``close()`` stops each one still
running, by its pid. Nothing here writes outside the given directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from infra.stack.common import STOP_TIMEOUT_S, StackError, tail
from infra.stack.install import require_tool
from infra.stack.kafka import KAFKA_LOG4J, ensure_kafka_jars
from infra.stack.minio import NOTIFY_TARGET_ID, ensure_minio_binary
from infra.stack.process import run_checked
from infra.stack.state import Credentials

READY_TIMEOUT_S: Final = 120.0
KAFKA_NODES: Final = 3
MINIO_NODES: Final = 4
# Three JVMs on a small machine: a small heap each (the one-node stack's broker gets 512m).
KAFKA_HEAP_MB: Final = 256
REPLICATION_FACTOR: Final = 3
MIN_INSYNC_REPLICAS: Final = 2


def free_port_on(host: str, taken: set[int]) -> int:
    """A port free on ``host`` and not in ``taken`` (which it is added to)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            taken.add(port)
            return port


@dataclass
class Node:
    """One server process of a cluster: started, killed with SIGKILL, started again."""

    name: str
    command: list[str]
    env: dict[str, str] = field(repr=False)
    log: Path
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running and self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            raise StackError(f"{self.name} is already running")
        self.starts += 1
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )

    def kill9(self) -> None:
        """SIGKILL to the node's process group, as a crash or the OOM killer would."""
        if self.process is None or not self.running:
            raise StackError(f"{self.name} is not running")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S."""
        if self.process is None or not self.running:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                continue
            return

    def assert_alive(self) -> None:
        if not self.running:
            raise StackError(f"{self.name} exited; last lines of {self.log}:\n{tail(self.log)}")


class Cluster:
    """Nodes started together and stopped together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_until(self, what: str, check: Callable[[], bool], timeout_s: float) -> float:
        """Seconds until ``check()`` held; StackError (with the logs' tails) after
        ``timeout_s`` or when a node that should run exited."""
        started = time.monotonic()
        while not check():
            for node in self.nodes:
                # A node that exited on its own (not killed by a scenario) failed.
                if node.process is not None and node.process.poll() not in (None, -signal.SIGKILL):
                    node.assert_alive()
            if time.monotonic() - started > timeout_s:
                logs = "\n".join(f"--- {n.name}:\n{tail(n.log, 15)}" for n in self.nodes)
                raise StackError(f"{what}: not after {timeout_s:.0f} s\n{logs}")
            time.sleep(0.25)
        return time.monotonic() - started


# --------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------


def kafka_node_properties(
    node_id: int, broker_ports: list[int], controller_ports: list[int], data: Path
) -> str:
    """server.properties of KRaft node ``node_id`` (1-based) of the cluster. Pure."""
    voters = ",".join(f"{n + 1}@127.0.0.1:{port}" for n, port in enumerate(controller_ports))
    broker = f"PLAINTEXT://127.0.0.1:{broker_ports[node_id - 1]}"
    controller = f"CONTROLLER://127.0.0.1:{controller_ports[node_id - 1]}"
    replicas, isr = REPLICATION_FACTOR, MIN_INSYNC_REPLICAS
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners={broker},{controller}",
            f"advertised.listeners={broker}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data}",
            # What a user's production cluster sets: every partition on every broker, a
            # write acknowledged by two of them, no unclean leader (it would lose writes).
            f"default.replication.factor={replicas}",
            f"min.insync.replicas={isr}",
            "unclean.leader.election.enable=false",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=3",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={isr}",
            "num.partitions=3",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.dedupe.buffer.size=1048577",
            "num.network.threads=1",
            "num.io.threads=2",
            "",
        ]
    )


def _admin_call(bootstrap: str, call: Callable[[Any], Any], timeout_ms: int = 5000) -> Any:
    """``call(admin)`` on a fresh admin client (its own event loop: callers are threads)."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def run() -> Any:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
        await admin.start()
        try:
            return await call(admin)
        finally:
            await admin.close()

    return asyncio.run(run())


class KafkaCluster(Cluster):
    """Three KRaft nodes (broker and controller in each JVM) on 127.0.0.1, formatted once
    with one cluster id and a static controller quorum."""

    def __init__(self, root: Path, *, nodes: int = KAFKA_NODES, heap_mb: int = KAFKA_HEAP_MB):
        super().__init__(root)
        taken: set[int] = set()
        self.broker_ports = [free_port_on("127.0.0.1", taken) for _ in range(nodes)]
        self.controller_ports = [free_port_on("127.0.0.1", taken) for _ in range(nodes)]
        self.heap_mb = heap_mb
        self.count = nodes

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.broker_ports)

    def node(self, node_id: int) -> Node:
        """The node whose KRaft ``node.id`` is ``node_id`` (1-based)."""
        return self.nodes[node_id - 1]

    def start(self) -> None:
        libs = ensure_kafka_jars()
        java = require_tool("java", "install a Java 17+ runtime")
        classpath = f"{libs}/*"
        cluster_id = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for node_id in range(1, self.count + 1):
            home = self.root / f"kafka-{node_id}"
            props = home / "server.properties"
            home.mkdir(parents=True, exist_ok=True)
            props.write_text(
                kafka_node_properties(
                    node_id, self.broker_ports, self.controller_ports, home / "data"
                )
            )
            storage = [java, "-cp", classpath, "kafka.tools.StorageTool"]
            run_checked(
                [*storage, "format", "-t", cluster_id, "-c", str(props)],
                home / "format.log",
                None,
                f"formatting Kafka node {node_id}",
            )
            command = [
                java,
                f"-Xms{self.heap_mb // 2}m",
                f"-Xmx{self.heap_mb}m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
                f"-Dkafka.logs.dir={home}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(props),
            ]
            self.nodes.append(Node(f"kafka-{node_id}", command, dict(os.environ), home / "log"))
        for node in self.nodes:
            node.start()
        self.wait_until("all Kafka brokers registered", self.all_brokers_up, READY_TIMEOUT_S)

    def brokers(self) -> set[int]:
        """The node ids of the brokers the cluster's metadata lists now (empty when no
        broker answers)."""
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # refusals while booting

        async def describe(admin: Any) -> set[int]:
            answer = await admin.describe_cluster()
            return {int(broker["node_id"]) for broker in answer["brokers"]}

        try:
            return set(_admin_call(self.bootstrap, describe, timeout_ms=3000))
        except Exception:  # any failure means "not up yet"; callers retry
            return set()

    def all_brokers_up(self) -> bool:
        return len(self.brokers()) == self.count

    def create_topic(self, name: str, partitions: int) -> None:
        from aiokafka.admin import NewTopic

        async def create(admin: Any) -> None:
            await admin.create_topics([NewTopic(name, partitions, REPLICATION_FACTOR)])

        _admin_call(self.bootstrap, create, timeout_ms=20000)

    def partitions(self, topic: str) -> dict[int, dict[str, Any]]:
        """partition → {"leader": node id, "replicas": [...], "isr": [...]} of ``topic``;
        empty when the cluster did not answer (a node was just killed: ask again)."""

        async def describe(admin: Any) -> Any:
            return await admin.describe_topics([topic])

        try:
            [described] = _admin_call(self.bootstrap, describe, timeout_ms=3000)
        except Exception:  # the admin client asked the killed node, or none answers yet
            return {}
        if described.get("error_code"):
            return {}
        return {
            int(p["partition"]): {
                "leader": int(p["leader"]),
                "replicas": list(p["replicas"]),
                "isr": list(p["isr"]),
            }
            for p in described["partitions"]
        }

    def fully_in_sync(self, topic: str) -> bool:
        """Every partition of ``topic`` has all its replicas in sync (and a leader)."""
        described = self.partitions(topic)
        return bool(described) and all(
            p["leader"] >= 0 and len(p["isr"]) == len(p["replicas"]) for p in described.values()
        )


# --------------------------------------------------------------------------------------
# MinIO
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MinioNodeAddress:
    host: str  # 127.0.0.N
    port: int
    console_port: int

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


class MinioCluster(Cluster):
    """A distributed MinIO: ``nodes`` servers on 127.0.0.1 … 127.0.0.N, one drive each
    (erasure coded over all of them: with four, any three take writes), every node with
    the Kafka notify target of the stack (``brokers``, ``topic``) and its own queue_dir.
    With ``nodes=1``: a single server (one drive) with the same target.

    Every node must have the same MINIO_* settings (MinIO checks), so the queue_dir is
    one absolute path, /proc/self/cwd/queue, that leads each node (Linux) to a directory
    of its own under ``queue_root``.

    MinIO tells its own endpoint from the others by address and port (every loopback
    address counts as 127.0.0.1 for it, so each node gets a port of its own) and, on a
    machine it takes for a container, by ``_MINIO_SERVER_LOCAL``; ``MINIO_CI_CD`` lets it
    use drives on the root file system, as test machines have.
    """

    def __init__(
        self,
        root: Path,
        credentials: Credentials,
        *,
        brokers: str,
        topic: str,
        nodes: int = MINIO_NODES,
    ) -> None:
        super().__init__(root)
        taken: set[int] = set()
        self.addresses = []
        for n in range(1, nodes + 1):
            host = f"127.0.0.{n}"
            self.addresses.append(
                MinioNodeAddress(host, free_port_on(host, taken), free_port_on(host, taken))
            )
        self.credentials = credentials
        self.brokers = brokers
        self.topic = topic

    @property
    def queue_root(self) -> Path:
        """The parent of every node's queue_dir."""
        return self.root / "queues"

    def drive(self, n: int) -> Path:
        return self.root / f"minio-{n}" / "drive"

    def node_home(self, n: int) -> Path:
        """Node ``n``'s working directory: its queue_dir is ``queue`` in it."""
        return self.queue_root / f"minio-{n}"

    def node_env(self, n: int) -> dict[str, str]:
        target = NOTIFY_TARGET_ID
        address = self.addresses[n - 1]
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "_MINIO_"))},
            "MINIO_ROOT_USER": self.credentials.minio_access_key,
            "MINIO_ROOT_PASSWORD": self.credentials.minio_secret_key,
            "MINIO_API_SYNC_EVENTS": "on",
            "MINIO_UPDATE": "off",
            "MINIO_CI_CD": "on",
            "_MINIO_SERVER_LOCAL": address.endpoint,
            f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": self.brokers,
            f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": self.topic,
            # Every node must have the same MINIO_* settings, and the path must be
            # absolute: the same path that leads to each node's own directory.
            f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}": "/proc/self/cwd/queue",
            f"MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_{target}": "100000",
        }

    def start(self) -> None:
        binary = str(ensure_minio_binary())
        if len(self.addresses) == 1:
            drives = [str(self.drive(1))]
        else:
            drives = [f"http://{a.endpoint}{self.drive(n)}" for n, a in self._numbered()]
        for n, address in self._numbered():
            self.drive(n).mkdir(parents=True, exist_ok=True)
            command = [binary, "server", *drives, "--address", address.endpoint]
            command += ["--console-address", f"{address.host}:{address.console_port}", "--quiet"]
            log = self.root / f"minio-{n}" / "log"
            home = self.node_home(n)
            home.mkdir(parents=True, exist_ok=True)
            self.nodes.append(Node(f"minio-{n}", command, self.node_env(n), log, home))
        for node in self.nodes:
            node.start()
        self.wait_until("every MinIO node ready", self.all_ready, READY_TIMEOUT_S)

    def _numbered(self) -> list[tuple[int, MinioNodeAddress]]:
        return list(enumerate(self.addresses, start=1))

    def ready(self, n: int) -> bool:
        """Node ``n`` is ready (distributed: sees a write quorum) and answers a signed
        request (health answers before IAM is loaded)."""
        address = self.addresses[n - 1]
        health = "cluster" if len(self.addresses) > 1 else "ready"
        return _http_ok(address.endpoint, f"/minio/health/{health}") and (
            _signed_request_ok(address.endpoint, self.credentials)
        )

    def all_ready(self) -> bool:
        return all(self.ready(n) for n in range(1, len(self.addresses) + 1))

    def values(self) -> Mapping[str, str]:
        """The settings' names for reaching node 1 (any node serves every request)."""
        return {
            "MINIO_ENDPOINT": self.addresses[0].endpoint,
            "MINIO_ACCESS_KEY": self.credentials.minio_access_key,
            "MINIO_SECRET_KEY": self.credentials.minio_secret_key,
            "MINIO_USE_SSL": "false",
        }


def _http_ok(endpoint: str, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{endpoint}{path}", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _signed_request_ok(endpoint: str, credentials: Credentials) -> bool:
    import urllib3
    from minio import Minio
    from minio.error import MinioException

    client = Minio(
        endpoint,
        access_key=credentials.minio_access_key,
        secret_key=credentials.minio_secret_key,
        secure=False,
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(2.0), retries=False),
    )
    try:
        client.list_buckets()
    except (MinioException, urllib3.exceptions.HTTPError, OSError):
        return False
    return True
