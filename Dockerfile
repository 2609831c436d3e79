# edgehub container: the hub on an embedded RocksDB store (SQLite on 32-bit ARM).
# Mount a volume at /data, or messages are lost with the container.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgehub ./edgehub
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 1000 --home-dir /data edgehub \
    && mkdir -p /data \
    && chown edgehub /data
COPY --from=build /install /usr/local
USER 1000
ENV StorageFolder=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
# MQTT over TLS, AMQPS, HTTPS (REST + WebSocket), Prometheus metrics
EXPOSE 8883 5671 443 9600
STOPSIGNAL SIGTERM
ENTRYPOINT ["edgehub"]
CMD ["run"]
