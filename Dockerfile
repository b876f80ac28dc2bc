# The Tessera operator image: `tessera run` (docs/install.md).
#
#   docker build -t tessera:0.1.0 .
#
# Two stages: the first installs Tessera and its dependencies into a virtualenv, the second
# copies only that virtualenv onto a clean slim image and runs it as a fixed non-root user
# (UID/GID 65532, the same as runAsUser in deploy/base/controller.yaml), so the Deployment's
# runAsNonRoot, readOnlyRootFilesystem and dropped capabilities hold.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tessera
WORKDIR /src
COPY pyproject.toml README.md ./
COPY quotas ./quotas
COPY scheduler ./scheduler
COPY admission ./admission
COPY simulator ./simulator
COPY tessera ./tessera
# The postgres extra lets --ledger point at PostgreSQL (postgresql+psycopg://...).
RUN /opt/tessera/bin/pip install ".[postgres]" \
 && /opt/tessera/bin/tessera --version

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="GPU-aware batch job queue scheduler for Kubernetes: the operator (tessera run)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 tessera \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin tessera \
 && mkdir -p /var/lib/tessera \
 && chown 65532:65532 /var/lib/tessera
COPY --from=build /opt/tessera /opt/tessera
# HOME and MPLCONFIGDIR point at /tmp (an emptyDir in the Deployment): the root filesystem is read-only.
ENV PATH=/opt/tessera/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
# The default SQLite ledger (tessera-ledger.sqlite) is written to the working directory.
WORKDIR /var/lib/tessera
USER 65532:65532
# webhooks (HTTPS), metrics, health: tessera run's defaults (--webhook-port, --metrics-port, --health-port).
EXPOSE 9443 8080 8081
ENTRYPOINT ["tessera", "run"]
