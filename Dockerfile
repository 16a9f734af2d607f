# syntax=docker/dockerfile:1
# heketi-csi: one image for the controller, the node plugin and the registrar
# (entrypoint `heketi-csi controller|node|registrar`).
#
# Targets:
#   runtime (default)  the driver: Python 3.11, the heketi-csi wheel and its dependencies,
#                      glusterfs-client for the node's FUSE mounts. Runs as uid 65532;
#                      the node DaemonSet runs it as root, privileged.
#   dev                runtime + glusterfs-server + devtools/ (Heketi simulator, demo) for
#                      docker-compose.yml and the kind e2e tests. Never deploy it.
#
#   docker build -t ghcr.io/heketi-csi/heketi-csi:0.1.0 .
#   docker build --target dev -t ghcr.io/heketi-csi/heketi-csi-dev:0.1.0 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for the package and every dependency ------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the driver image ----------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="heketi-csi" \
      org.opencontainers.image.description="CSI driver for GlusterFS volumes provisioned through Heketi" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# glusterfs-client: mount.glusterfs and the FUSE client the node plugin runs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends glusterfs-client \
    && rm -rf /var/lib/apt/lists/*
# Install from the builder's wheels without copying them into a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels heketi-csi \
    && pip --version
RUN groupadd --system --gid 65532 heketi-csi \
    && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin heketi-csi \
    && mkdir -p /csi \
    && chown 65532:65532 /csi
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["heketi-csi"]
CMD ["--help"]

# --- dev: local integration (docker-compose.yml) and kind e2e ---------------------------
FROM runtime AS dev
USER root
# glusterd for the simulator's real volumes; procps for pgrep in health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends glusterfs-server procps \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/heketi-csi
COPY devtools ./devtools
# `python -m devtools.heketi_sim` and `python -m devtools.demo` from anywhere.
ENV PYTHONPATH=/opt/heketi-csi
ENTRYPOINT []
CMD ["python", "-m", "devtools.heketi_sim", "--help"]

# --- the default target is the driver image ---------------------------------------------
FROM runtime
