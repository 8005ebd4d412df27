"""MinIO: built from its Go module (the community edition is distributed as source),
started with the stack's Kafka as its notify target."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path

from infra.stack.install import go_installed_binary
from infra.stack.server import Context
from infra.stack.state import Credentials

# The last commit of github.com/minio/minio (the repository is archived).
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
# The MinIO Kafka notify target id; minio-notify.json's target.id must match it.
NOTIFY_TARGET_ID = "VOXPERSONA"


def ensure_minio_binary() -> Path:
    """Build the pinned MinIO server with ``go install`` unless the cache already has it
    (takes minutes the first time)."""
    return go_installed_binary(
        name="MinIO", package=MINIO_MODULE, version=MINIO_VERSION, binary="minio"
    )


def minio_ready(port: int, creds: Credentials) -> bool:
    """Health "ready", then one signed request: the health endpoint answers before IAM
    is loaded, while requests are still refused with XMinioServerNotInitialized."""
    url = f"http://127.0.0.1:{port}/minio/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status != 200:
                return False
    except (urllib.error.URLError, OSError):
        return False
    import urllib3
    from minio import Minio as MinioClient
    from minio.error import MinioException

    client = MinioClient(
        f"127.0.0.1:{port}",
        access_key=creds.minio_access_key,
        secret_key=creds.minio_secret_key,
        secure=False,
        http_client=urllib3.PoolManager(timeout=urllib3.Timeout(2.0), retries=False),
    )
    try:
        client.list_buckets()
    except (MinioException, urllib3.exceptions.HTTPError, OSError):
        return False
    return True


class Minio:
    name = "minio"
    ports = ("minio_port", "minio_console_port")
    data_ports = ()
    others_wait = False
    stop_signal = signal.SIGTERM

    def install(self) -> Path:
        return ensure_minio_binary()

    def start(self, ctx: Context, installed: Path) -> None:
        creds, state = ctx.credentials, ctx.state
        data = ctx.state_dir / "minio" / "data"
        queue = ctx.state_dir / "minio" / "queue"
        data.mkdir(parents=True, exist_ok=True)
        queue.mkdir(parents=True, exist_ok=True)
        target = NOTIFY_TARGET_ID
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MINIO_")},
            "MINIO_ROOT_USER": creds.minio_access_key,
            "MINIO_ROOT_PASSWORD": creds.minio_secret_key,
            # Send the event before answering the request: nothing lives only in memory.
            "MINIO_API_SYNC_EVENTS": "on",
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER": "on",
            f"MINIO_NOTIFY_KAFKA_ENABLE_{target}": "on",
            f"MINIO_NOTIFY_KAFKA_BROKERS_{target}": f"127.0.0.1:{state.kafka_port}",
            f"MINIO_NOTIFY_KAFKA_TOPIC_{target}": ctx.topics.events,
            # Persistent on-disk queue: events survive a Kafka outage and are replayed.
            f"MINIO_NOTIFY_KAFKA_QUEUE_DIR_{target}": str(queue),
            f"MINIO_NOTIFY_KAFKA_QUEUE_LIMIT_{target}": "100000",
        }
        ctx.spawn(
            self.name,
            [
                str(installed),
                "server",
                str(data),
                "--address",
                f"127.0.0.1:{state.minio_port}",
                "--console-address",
                f"127.0.0.1:{state.minio_console_port}",
                "--quiet",
            ],
            env,
        )

    def ready(self, ctx: Context) -> bool:
        return minio_ready(ctx.state.minio_port, ctx.credentials)

    def after_ready(self, ctx: Context) -> None:
        return None

    def env(self, ctx: Context) -> dict[str, str]:
        return {
            "MINIO_ENDPOINT": f"127.0.0.1:{ctx.state.minio_port}",
            "MINIO_ACCESS_KEY": ctx.credentials.minio_access_key,
            "MINIO_SECRET_KEY": ctx.credentials.minio_secret_key,
            "MINIO_USE_SSL": "false",
        }
