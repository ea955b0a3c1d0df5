# syntax=docker/dockerfile:1
# The job image: one executable (`lakehouse`) answering to every job's name through links
# (raw-append, stream-join, merge-upsert, maintenance, lakectl), so the code they share ships
# once, on a slim Debian runtime, run as a non-root user. ECS task definitions pick the job in
# `command`.
#   docker build -t lakehouse-writer .
#   docker run --rm -e LAKEHOUSE_LAKE_ROOT=s3://bucket/lake lakehouse-writer raw-append --trigger once

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
# rdkafka's cmake build (librdkafka with SSL, SASL/OAUTHBEARER, zstd).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake make g++ pkg-config libssl-dev libcurl4-openssl-dev libsasl2-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lakehouse \
 && mkdir -p /out \
 && cp target/release/lakehouse /out/ \
 && for job in raw-append stream-join merge-upsert maintenance lakectl; do ln -s lakehouse "/out/$job"; done

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# Shared libraries the binaries link (tests/deploy checks this list against `ldd` of the build).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 libsasl2-2 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin lakehouse \
 && install -d -o lakehouse -g lakehouse /tmp/lakehouse
COPY --from=build /out/ /usr/local/bin/
COPY schemas/ /etc/lakehouse/
ENV LAKEHOUSE_CONFIG=/etc/lakehouse/pipeline.toml \
    LAKEHOUSE_HEALTH_FILE=/tmp/lakehouse/health.json
USER 10001:10001
WORKDIR /tmp/lakehouse
# Healthy while the running job's heartbeat is fresh (it beats between batches and while idle).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/lakectl", "healthcheck", "--max-age", "5m"]
CMD ["raw-append", "--help"]
