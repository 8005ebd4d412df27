"""Images built on this machine: a debootstrap base, the stand-ins and the project's image.

Each tag carries a digest of what went into it (its Dockerfile and files, the pinned
versions), so a warm run finds every image present and builds nothing; a change to any
input gives a new tag and one rebuild.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from infra.docker.engine import Engine, run, say
from infra.stack import REPO_ROOT, cache_dir, ensure_minio_binary

STANDINS = Path(__file__).resolve().parent / "standins"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# What the consumer image is built from (Dockerfile, .dockerignore and its COPY sources).
CONSUMER_INPUTS = (
    "Dockerfile",
    ".dockerignore",
    "pyproject.toml",
    "README.md",
    "minio-notify.json",
    "consumer",
    "infra",
)


@dataclass(frozen=True)
class Images:
    """The tags docker-compose.yml's image variables are set to."""

    python: str
    minio: str
    kafka: str
    postgres: str
    consumer: str
    prometheus: str

    def compose_env(self) -> dict[str, str]:
        return {
            "MINIO_IMAGE": self.minio,
            "KAFKA_IMAGE": self.kafka,
            "POSTGRES_IMAGE": self.postgres,
            "CONSUMER_IMAGE": self.consumer,
            "PYTHON_BASE_IMAGE": self.python,
            "PROMETHEUS_IMAGE": self.prometheus,
        }


def digest(paths: Iterable[Path], *extra: str, exclude: tuple[Path, ...] = ()) -> str:
    """sha256 over file names and contents (directories walked in order, ``exclude``
    left out), plus ``extra``."""
    h = hashlib.sha256()
    for text in extra:
        h.update(text.encode() + b"\0")
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if "__pycache__" in path.parts or any(path.is_relative_to(x) for x in exclude):
                continue
            h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


# Kept out of the consumer image by .dockerignore, so no input of it: editing the image
# builders must not rebuild the consumer image.
CONSUMER_EXCLUDED = (REPO_ROOT / "infra" / "docker",)


def image_exists(eng: Engine, tag: str) -> bool:
    proc = subprocess.run(
        ["docker", "image", "inspect", tag], capture_output=True, env=eng.env(), check=False
    )
    return proc.returncode == 0


def build(
    eng: Engine,
    tag: str,
    context: Path,
    *,
    args: dict[str, str] | None = None,
    dockerfile: Path | None = None,
) -> str:
    """``docker build`` unless the tag is there already; returns the tag."""
    if image_exists(eng, tag):
        return tag
    say(f"building {tag}")
    cmd = ["docker", "build", "-q", "-t", tag]
    for key, value in (args or {}).items():
        cmd += ["--build-arg", f"{key}={value}"]
    if dockerfile is not None:
        cmd += ["-f", str(dockerfile)]
    run([*cmd, str(context)], env=eng.env(), what=f"docker build {tag}")
    return tag


# --------------------------------------------------------------------------------------
# The images
# --------------------------------------------------------------------------------------


def debian_base(eng: Engine) -> str:
    """Debian minbase from debootstrap, imported as an image (no registry needed)."""
    recipe = f"{DEBIAN_SUITE} {DEBIAN_MIRROR} minbase, without apt's caches"
    tag = f"voxpersona/debian:{DEBIAN_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:8]}"
    if image_exists(eng, tag):
        return tag
    say(f"debootstrap {DEBIAN_SUITE} (minbase) for {tag}")
    with tempfile.TemporaryDirectory(prefix="voxpersona-rootfs-") as tmp:
        rootfs = Path(tmp)
        run(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
            what="debootstrap",
        )
        # The downloaded .debs and package lists: ~120 MB every image would carry.
        for leftovers in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / leftovers).glob("*"):
                if path.is_file():
                    path.unlink()
        # The context closes tar's pipe and waits for it (an open pipe is a ResourceWarning).
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            run(["docker", "import", "-", tag], env=eng.env(), what="docker import", stdin=tar)
    return tag


def standin(eng: Engine, name: str, base: str, files: dict[str, Path] | None = None) -> str:
    """A stand-in image from infra/docker/standins/<name>, plus artefacts from the cache."""
    source = STANDINS / name
    extra = [
        f"{key}={path.stat().st_size}:{path.stat().st_mtime_ns}"
        for key, path in sorted((files or {}).items())
    ]
    tag = f"voxpersona/{name}-standin:{digest([source], base, *extra)}"
    if image_exists(eng, tag):
        return tag
    with tempfile.TemporaryDirectory(prefix=f"voxpersona-{name}-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(source, context)
        for key, path in (files or {}).items():
            copy = shutil.copytree if path.is_dir() else shutil.copy2
            copy(path, context / key)
        return build(eng, tag, context, args={"BASE_IMAGE": base})


def kafka_libs() -> Path:
    """The broker jars plus kafka-tools (topic and API-versions commands), via Maven."""
    pom = STANDINS / "kafka" / "pom.xml"
    libs = cache_dir() / "kafka-image" / digest([pom]) / "libs"
    if (libs / ".complete").is_file():
        return libs
    say("fetching the Kafka image's jars with Maven (first time only)")
    shutil.rmtree(libs, ignore_errors=True)
    run(
        [
            "mvn",
            "-q",
            "-B",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={cache_dir() / 'm2'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={libs}",
        ],
        what="mvn copy-dependencies (Kafka image)",
    )
    (libs / ".complete").write_text("ok\n")
    return libs


def wheelhouse() -> Path:
    """Wheels of the image's runtime dependencies (and setuptools, for building the project
    wheel), made on the host: pip inside a container cannot reach PyPI here."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    key = hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]
    target = cache_dir() / "wheelhouse" / key
    if (target / ".complete").is_file():
        return target
    say(f"pip wheel of {len(requirements)} requirements into {target} (first time only)")
    shutil.rmtree(target, ignore_errors=True)
    run(
        [
            sys_python(),
            "-m",
            "pip",
            "wheel",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(target),
            *requirements,
        ],
        what="pip wheel",
    )
    (target / ".complete").write_text("ok\n")
    return target


def sys_python() -> str:
    import sys

    return sys.executable


def consumer_image(eng: Engine, python_base: str) -> str:
    """The project's own Dockerfile, on the local Python base, from the local wheelhouse."""
    wheels = wheelhouse()
    inputs = [REPO_ROOT / name for name in CONSUMER_INPUTS]
    tag = (
        f"voxpersona/consumer:{digest(inputs, python_base, wheels.name, exclude=CONSUMER_EXCLUDED)}"
    )
    if image_exists(eng, tag):
        return tag
    # The build context is the clone: the wheels are linked into .wheelhouse/ for this
    # build only (hard links: same file system as the cache, usually; else copies).
    local = REPO_ROOT / ".wheelhouse"
    copied = [_link_or_copy(wheel, local / wheel.name) for wheel in wheels.glob("*.whl")]
    try:
        return build(eng, tag, REPO_ROOT, args={"BASE_IMAGE": python_base, "PIP_NO_INDEX": "1"})
    finally:
        for path in copied:
            path.unlink(missing_ok=True)


def _link_or_copy(source: Path, target: Path) -> Path:
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:
        shutil.copy2(source, target)
    return target


def build_all(eng: Engine) -> Images:
    base = debian_base(eng)
    python = standin(eng, "python", base)
    minio = standin(eng, "minio", base, {"minio": ensure_minio_binary()})
    kafka = standin(eng, "kafka", base, {"libs": kafka_libs()})
    postgres = standin(eng, "postgres", base)
    prometheus = standin(eng, "prometheus", base)
    images = Images(python, minio, kafka, postgres, consumer_image(eng, python), prometheus)
    remove_stale(eng, [base, *images.compose_env().values()])
    return images


def remove_stale(eng: Engine, current: Iterable[str]) -> None:
    """Older tags of the same repositories (inputs changed since): they only fill the disk.
    An image still in use is refused by docker and stays."""
    keep = set(current)
    for repository in {tag.rsplit(":", 1)[0] for tag in keep}:
        listing = subprocess.run(
            ["docker", "images", repository, "--format", "{{.Repository}}:{{.Tag}}"],
            capture_output=True,
            text=True,
            env=eng.env(),
            check=False,
            timeout=60,
        ).stdout.split()
        stale = [tag for tag in listing if tag not in keep]
        if stale:
            say(f"removing stale images: {' '.join(stale)}")
            subprocess.run(
                ["docker", "rmi", *stale],
                capture_output=True,
                env=eng.env(),
                check=False,
                timeout=120,
            )
