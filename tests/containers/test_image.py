"""The project's image, built from the Dockerfile on the local Python base: the package is
installed (its processors are found), non-root, small."""

from __future__ import annotations

import json
import subprocess

from infra.docker.engine import Engine
from infra.docker.images import Images

# python:3.11-slim plus the venv is ~250 MB; Debian's python3 on minbase is larger.
MAX_IMAGE_BYTES = 400_000_000


def _python(engine: Engine, image: str, code: str) -> str:
    # Placeholder credentials: Settings requires them; nothing is contacted (no network).
    env = ["-e", "MINIO_ACCESS_KEY=placeholder", "-e", "MINIO_SECRET_KEY=placeholder"]
    proc = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            *env,
            "--entrypoint",
            "python",
            image,
            "-c",
            code,
        ],
        capture_output=True,
        text=True,
        env=engine.env(),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_processors_are_found_in_the_image(docker_engine: Engine, images: Images) -> None:
    """The defect this image had: a source copy has no entry points, so no processor."""
    code = (
        "import json; from importlib.metadata import entry_points; "
        "from consumer.processing.registry import load_processors; "
        "from consumer.settings import Settings; "
        "print(json.dumps([sorted(e.name for e in entry_points(group='consumer.processors')),"
        " sorted(load_processors(Settings()))]))"
    )
    # The last line: structlog may log (to stdout) that transcribe is not configured.
    output = _python(docker_engine, images.consumer, code)
    declared, loaded = json.loads(output.strip().splitlines()[-1])
    assert {"audio-probe", "transcribe"} <= set(declared)
    # transcribe is off until TRANSCRIBE_BASE_URL is set; the probe needs nothing.
    assert "audio-probe" in loaded


def test_policy_templates_are_package_data(docker_engine: Engine, images: Images) -> None:
    code = (
        "import json; from consumer.setup.identities import POLICIES_DIR; "
        "print(json.dumps(sorted(p.name for p in POLICIES_DIR.glob('*.json'))))"
    )
    assert json.loads(_python(docker_engine, images.consumer, code)), "no policy templates"


def test_image_runs_as_non_root_and_is_small(docker_engine: Engine, images: Images) -> None:
    uid = _python(docker_engine, images.consumer, "import os; print(os.getuid())").strip()
    assert uid == "10001"
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", images.consumer],
        capture_output=True,
        text=True,
        env=docker_engine.env(),
        timeout=60,
        check=True,
    )
    size = int(inspect.stdout.strip())
    print(f"consumer image {images.consumer}: {size / 1e6:.0f} MB")
    assert size < MAX_IMAGE_BYTES
