# edgehub container: the hub on an embedded RocksDB store (SQLite on 32-bit ARM), as a drop-in for
# the IoT Edge hub module or a Kubernetes StatefulSet. Mount a volume at /data, or messages are
# lost with the container.
#
#   docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 -t REGISTRY/edgehub:0.1.0 .
#
# Stages per architecture (buildx sets TARGETARCH; a plain `docker build` builds amd64):
#   amd64, arm64 (arm64v8): every dependency has a wheel, RocksDB through rocksdict;
#   arm (arm32v7): no RocksDB wheel, so the store is SQLite; packages without an armv7 wheel are
#   built from source, in the build stage only.
# Every build stage has Debian's C compiler, so setup.py compiles the hot-path modules with mypyc
# (docs/performance.md); the runtime stage gets the built package, not the compiler.
# tests/test_container.py runs this file's install and start steps without a Docker engine.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TARGETARCH=amd64

FROM ${PYTHON_IMAGE} AS build-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# Debian's packages as the distribution ships them (unpinned: the base image pins the release).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

FROM build-base AS build-amd64

FROM build-base AS build-arm64

FROM build-base AS build-arm
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libffi-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

# A stage of this file picked by TARGETARCH, not an image with a tag:
# hadolint ignore=DL3006
FROM build-${TARGETARCH} AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY edgehub ./edgehub
RUN pip install --no-cache-dir --prefix=/install .

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 1000 --user-group --home-dir /data --no-create-home edgehub \
    && mkdir -p /data \
    && chown 1000:1000 /data
COPY --from=build /install /usr/local
USER 1000:1000
WORKDIR /data
ENV StorageFolder=/data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
VOLUME ["/data"]
# MQTT over TLS, AMQPS, HTTPS (REST + WebSocket), Prometheus metrics and probes (plain HTTP)
EXPOSE 8883 5671 443 9600
# /ready on the metrics port (store open, every enabled head bound); with Metrics__Listener__Port=0
# the probe checks that every enabled port accepts connections instead.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 CMD ["edgehub", "check", "--probe"]
# SIGTERM: in-flight batches are flushed and the store closed, exit 0 (give it the default 10 s or more).
STOPSIGNAL SIGTERM
ENTRYPOINT ["edgehub"]
CMD ["run"]

FROM runtime AS runtime-amd64

FROM runtime AS runtime-arm64

FROM runtime AS runtime-arm
ENV storeBackend=sqlite

# The image: the runtime stage of the target architecture (a stage of this file, not a tagged image).
# hadolint ignore=DL3006
FROM runtime-${TARGETARCH}
