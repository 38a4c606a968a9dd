# syntax=docker/dockerfile:1
#
# Swarm Runtime production image.
#
#   docker build -t swarm-runtime:0.1.0 .
#   docker run --rm -p 3210:3210 -e DATABASE_URL=postgresql://... swarm-runtime:0.1.0
#   docker run --rm -e DATABASE_URL=... swarm-runtime:0.1.0 migrate
#
# DATABASE_URL is required for serve/migrate/backup/restore: the image never starts the
# embedded PostgreSQL (that is for `swarm-runtime dev` on a workstation only).

# --- stage 1: build every wheel (ours and our dependencies) and install them into a venv ----
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the package build needs; app_functions/plugins/schema.json are copied later so
# that editing a function does not rebuild the dependency layers.
COPY pyproject.toml README.md ./
COPY runtime/ ./runtime/

RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels swarm-runtime

# --- stage 2: the runtime image: the venv, the app, a non-root user, nothing else --------
FROM python:3.11-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG GIT_SHA=unknown
LABEL org.opencontainers.image.title="swarm-runtime" \
      org.opencontainers.image.description="Self-hosted Convex-style function runtime on PostgreSQL" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_SHA}" \
      org.opencontainers.image.licenses="MIT"

# A fixed uid/gid so Kubernetes `runAsNonRoot` can verify it and volumes can be chowned to it.
RUN groupadd --system --gid 10001 swarm \
    && useradd --system --uid 10001 --gid swarm --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin swarm

COPY --from=build /opt/venv /opt/venv

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RUNTIME_HOST=0.0.0.0 \
    RUNTIME_PORT=3210 \
    RUNTIME_WORKERS=2 \
    RUNTIME_FUNCTIONS=/app/app_functions \
    RUNTIME_SCHEMA=/app/schema.json \
    RUNTIME_PLUGINS=/app/plugins \
    RUNTIME_DATA=/tmp/swarm-runtime \
    RUNTIME_LOG_FORMAT=json

WORKDIR /app
# Owned by root and read-only for the service user: the code is not the process's to change.
COPY app_functions/ ./app_functions/
COPY plugins/ ./plugins/
COPY schema.json ./schema.json
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/swarm-runtime-entrypoint

# Numeric, so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001

EXPOSE 3210

# Liveness only (no DB round trip); readiness is /readyz and belongs to the orchestrator.
# python + urllib because the slim image ships neither curl nor wget; urlopen raises on
# any non-2xx status, so the exit code is the health.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RUNTIME_PORT', '3210'), timeout=2)"]

# uvicorn drains in-flight calls and closes WebSockets on SIGTERM; the entrypoint `exec`s so
# the runtime is PID 1 and receives the signal directly.
STOPSIGNAL SIGTERM

ENTRYPOINT ["swarm-runtime-entrypoint"]
# Expands to: swarm-runtime serve --host 0.0.0.0 --port 3210 --workers ${RUNTIME_WORKERS:-2}
CMD ["serve"]
