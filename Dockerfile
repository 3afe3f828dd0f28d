# syntax=docker/dockerfile:1
#
# weatherflow: one image for every role (run, serve, produce, generate, train, evaluate).
#
#   docker build -t weatherflow:latest .
#   docker run --rm -p 8080:8080 weatherflow:latest          # generator → pipeline → API on :8080
#
# Needs BuildKit (the default builder of Docker 23+) for the cache mounts below. The build
# context is whitelisted by .dockerignore. Checked by scripts/check-compose.sh (hadolint).

# The toolchain is the crate's rust-version (Cargo.toml), so the image also proves the MSRV.
ARG RUST_VERSION=1.88.0

FROM rust:${RUST_VERSION}-bookworm AS build

# rdkafka builds its bundled librdkafka with ./configure and make (no cmake), linking
# OpenSSL (the `ssl` feature) and zlib from the system.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry and target directories are BuildKit cache mounts, so a rebuild after a
# source change compiles only this crate; the binary is copied out of the cache mount in
# the same step.
RUN --mount=type=cache,id=weatherflow-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=weatherflow-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=weatherflow-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin weatherflow \
    && install -m 0755 target/release/weatherflow /usr/local/bin/weatherflow


FROM debian:bookworm-slim AS runtime

# libssl3 for librdkafka's TLS, ca-certificates for TLS brokers and the Open-Meteo API,
# curl for the HEALTHCHECK.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 weatherflow \
    && useradd --system --uid 10001 --gid weatherflow --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin weatherflow

COPY --from=build /usr/local/bin/weatherflow /usr/local/bin/weatherflow

WORKDIR /app
# Read-only for the service user: `--models` defaults to ./models, i.e. /app/models.
# Compose mounts ./models over it so that new model versions hot-reload without a rebuild.
COPY models/ /app/models/
COPY stations.toml /app/stations.toml

# Numeric, so that runtimes can verify it is not root (e.g. Kubernetes runAsNonRoot).
USER 10001:10001
EXPOSE 8080

# Only meaningful for processes that serve the API on :8080 (`run` in process 0 without
# --no-api, and `serve`); docker-compose.yml disables it for the others. Exec form: any
# non-zero exit (curl -f gives 22 on an HTTP error, 7 when nothing listens) is unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "--max-time", "2", "http://127.0.0.1:8080/health"]

ENTRYPOINT ["weatherflow"]
# The self-contained demo: synthetic stations → 2 workers → REST API and dashboard.
CMD ["run", "-w", "2", "--api", "0.0.0.0:8080"]
