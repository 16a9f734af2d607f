# heketi-csi: one image for the controller, the node plugin and the registrar
# (entrypoint `heketi-csi controller|node|registrar`).
#
# Targets:
#   runtime (default)  the driver: Python 3.11, the heketi-csi wheel and its dependencies,
#                      glusterfs-client for the node's FUSE mounts. Runs as uid 65532;
#                      the node DaemonSet runs it as root, privileged.
#   dev                runtime + glusterfs-server + devtools/ (Heketi simulator, demo) for
#                      docker-compose.yml and the e2e tests. Never deploy it.
#
#   docker build -t ghcr.io/heketi-csi/heketi-csi:0.1.0 .
#   docker build --target dev -t ghcr.io/heketi-csi/heketi-csi-dev:0.1.0 .
#
# Base: BASE_IMAGE, any Debian bookworm image. The default (Docker Hub's Python image) needs
# a registry; without one, a debootstrap'd Debian works as well, which is what
# `python -m devtools.k8s.driver_image build` passes:
#   docker build --network=host --build-arg BASE_IMAGE=<local debian image> .
# On either base the driver runs from a virtualenv in /opt/venv: Debian's own python3
# refuses pip installs into the system (PEP 668). BuildKit is needed (RUN --mount).

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- base: BASE_IMAGE with Python 3.11 and an empty virtualenv -------------------------
FROM ${BASE_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The Python image brings its own interpreter; a plain Debian gets Debian's (3.11).
RUN if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# --- builder: wheels for the package and every dependency ------------------------------
FROM base AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services ./services
# Behind a TLS-intercepting proxy, pass its CA bundle as a build secret (never stored in a
# layer): docker build --secret id=ca-certificates,src=/etc/ssl/certs/ca-certificates.crt
RUN --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && pip wheel --wheel-dir /wheels .

# --- runtime: the driver image ----------------------------------------------------------
FROM base AS runtime
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

# --- dev: local integration (docker-compose.yml) and the e2e tests ------------------------
FROM runtime AS dev
USER root
# glusterd for the simulator's real volumes; procps for pgrep in health checks; xfsprogs for
# the simulator's sized bricks (an XFS file system per brick, as Heketi makes them).
RUN apt-get update \
    && apt-get install -y --no-install-recommends glusterfs-server procps xfsprogs \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/heketi-csi
COPY devtools ./devtools
# `python -m devtools.heketi_sim` and `python -m devtools.demo` from anywhere.
ENV PYTHONPATH=/opt/heketi-csi
ENTRYPOINT []
CMD ["python", "-m", "devtools.heketi_sim", "--help"]

# --- the default target is the driver image ---------------------------------------------
FROM runtime
