# VoxPersona consumer image.
#
#   docker build -t voxpersona-consumer .
#   docker run --rm --env-file .env voxpersona-consumer status --json
#
# Stage 1 builds the project's wheel and installs it, with its runtime dependencies, into a
# virtualenv; stage 2 is a slim runtime with only that venv, running as an unprivileged
# user. The package is installed, not copied as source: its entry points (the
# `consumer.processors` plugins), its package data (the policy templates) and
# minio-notify.json are then where the code looks for them.
#
# Without a registry or PyPI (air-gapped builds; tests/containers on this project's CI):
#   pip wheel -w .wheelhouse <the [project].dependencies of pyproject.toml> setuptools
#   docker build --build-arg BASE_IMAGE=<a local Python 3.11 image> \
#                --build-arg PIP_NO_INDEX=1 -t voxpersona-consumer .
# (infra/docker/images.py does exactly this.)

ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder

# 1 = install only from .wheelhouse/ (no index); empty = PyPI, with .wheelhouse/ as extra
# links when it holds wheels.
ARG PIP_NO_INDEX=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_FIND_LINKS=/wheelhouse \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv
# .wheelhouse/ holds at least its README, so this COPY never fails.
COPY .wheelhouse/ /wheelhouse/

# Dependencies first, from pyproject.toml alone: this layer is rebuilt when the
# dependencies change, not on every code edit.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && if [ -n "$PIP_NO_INDEX" ]; then export PIP_NO_INDEX=1; else unset PIP_NO_INDEX; fi \
 && /opt/venv/bin/pip install -r requirements.txt

COPY README.md minio-notify.json ./
COPY consumer/ ./consumer/
COPY infra/ ./infra/
RUN if [ -n "$PIP_NO_INDEX" ]; then export PIP_NO_INDEX=1; else unset PIP_NO_INDEX; fi \
 && /opt/venv/bin/pip wheel --no-deps -w /dist . \
 && /opt/venv/bin/pip install --no-deps /dist/*.whl \
 && /opt/venv/bin/python -c "from importlib.metadata import entry_points as e; names = sorted(p.name for p in e(group='consumer.processors')); print('processors:', names); assert names, 'no consumer.processors entry points in the installed package'"


FROM ${BASE_IMAGE} AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MINIO_NOTIFY_CONFIG=/app/minio-notify.json \
    INDEX_URL=sqlite:////data/index.sqlite3 \
    HEALTH_HOST=0.0.0.0 \
    HEALTH_PORT=8080

# /data holds the embedded SQLite index; created here with the right owner so a named
# volume mounted on it starts out writable by the app user.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app \
 && mkdir -p /data /app \
 && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The bucket notification config `setup` applies (MINIO_NOTIFY_CONFIG above).
COPY minio-notify.json ./

USER 10001:10001

EXPOSE 8080

# Slim image: no curl. A non-2xx answer or a refused connection makes urlopen raise.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${HEALTH_PORT:-8080}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["python", "-m", "consumer"]
CMD ["run", "--role", "all"]
