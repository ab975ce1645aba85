# syntax=docker/dockerfile:1
# The x0tta6bl4 image: the one `x0tta6bl4` binary (node daemon, CA tool, status client,
# twin, demo) on Debian slim, run as an unprivileged user.
#
#   docker build -t x0tta6bl4:0.1.0 .
#   docker run --rm -p 7001:7001/udp -p 8001:8001 \
#     -v "$PWD/node.toml:/etc/x0tta6bl4/node.toml:ro" \
#     -v "$PWD/ca/n1:/var/lib/x0tta6bl4/svid:ro" x0tta6bl4:0.1.0
#
# The configuration (examples/node.toml explains every key) must bind the container's
# interfaces (listen = "0.0.0.0:7001", api_listen = "0.0.0.0:8001") and name
# `[identity] dir = "/var/lib/x0tta6bl4/svid"`. The Helm chart (deploy/helm/x0tta6bl4)
# renders both. Other subcommands run as `docker run IMAGE ca init ...`, `... status`.
# deploy/tests/test_dockerfile.py keeps this file in step with the binary's flags.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
# aws-lc-sys (the TLS crypto provider) compiles C: gcc comes with the image; cmake is its
# fallback build system on targets without a pregenerated build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace: cargo needs every member's manifest to resolve it.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p x0tta6bl4-cli \
    && install -D -m 0755 target/release/x0tta6bl4 /out/x0tta6bl4

FROM debian:${DEBIAN_RELEASE}-slim
# The binary needs only libc, libm and libgcc_s (all in the base image). The user's ids
# match the Helm chart's securityContext (runAsUser/runAsGroup 10001).
RUN groupadd --system --gid 10001 x0tta6bl4 \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin x0tta6bl4 \
    && install -d -m 0755 /etc/x0tta6bl4 \
    && install -d -m 0700 -o 10001 -g 10001 /var/lib/x0tta6bl4/svid
COPY --from=builder /out/x0tta6bl4 /usr/local/bin/x0tta6bl4
COPY examples/node.toml /usr/share/doc/x0tta6bl4/node.example.toml
USER 10001:10001
# Mesh links: QUIC over UDP (`listen`). HTTP API, health and metrics: TCP (`api_listen`).
EXPOSE 7001/udp 8001/tcp
ENTRYPOINT ["x0tta6bl4"]
CMD ["node", "--config", "/etc/x0tta6bl4/node.toml"]
