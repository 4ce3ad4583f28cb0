# syntax=docker/dockerfile:1
# The oxrl image: one binary, the role chosen by its subcommand (`oxrl coordinator`,
# `oxrl learner`, `oxrl actor`, `oxrl run`, ...). CPU only; Dockerfile.cuda is the GPU image.
#   docker build -t oxrl:0.1.0 .
# Needs BuildKit (Docker 23+ uses it by default) for the cache mounts, which keep the cargo
# registry and the target directory between builds: a source change rebuilds only oxrl's
# own crates.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
# The embedded default model (assets/default-policy) is compiled into the binary.
WORKDIR /opt/oxrl
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/opt/oxrl/target,sharing=locked \
    cargo build --release --locked --bin oxrl \
    && install -D -m 0755 target/release/oxrl /out/oxrl

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 oxrl \
    && useradd --system --uid 10001 --gid oxrl --create-home --home-dir /home/oxrl \
        --shell /usr/sbin/nologin oxrl
COPY --from=builder /out/oxrl /usr/local/bin/oxrl
USER 10001:10001
WORKDIR /home/oxrl
# coordinator gRPC, learner gRPC, metrics (coordinator + dashboard, learner, actor)
EXPOSE 7000 7001 9000 9001 9002
ENTRYPOINT ["oxrl"]
CMD ["--help"]
