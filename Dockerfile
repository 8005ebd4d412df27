# VoxPersona consumer image.
#
#   docker build -t voxpersona-consumer .
#   docker run --rm --env-file .env voxpersona-consumer status --json
#
# Stage 1 resolves the runtime dependencies of pyproject.toml into a virtualenv; stage 2
# is a slim runtime with that venv, the `consumer` package and minio-notify.json, running
# as an unprivileged user.

FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/venv

# Only [project].dependencies of pyproject.toml: this layer is rebuilt when the
# dependencies change, not on every code edit. The code itself is copied in stage 2.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && /opt/venv/bin/pip wheel --wheel-dir /wheels -r requirements.txt \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt


FROM python:3.11-slim AS runtime

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
 && mkdir -p /data \
 && chown 10001:10001 /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY consumer/ ./consumer/
COPY minio-notify.json ./
# The policy templates of `setup --identities` (consumer/identities.py finds them here).
COPY infra/minio/policies/ ./infra/minio/policies/

USER 10001:10001

EXPOSE 8080

# Slim image: no curl. A non-2xx answer or a refused connection makes urlopen raise.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${HEALTH_PORT:-8080}/healthz', timeout=4)" || exit 1

ENTRYPOINT ["python", "-m", "consumer"]
CMD ["run", "--role", "all"]
