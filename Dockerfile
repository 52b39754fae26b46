# The redis-janitor container image: the release binary, with its Lua scripts
# embedded, on a distroless base, run as a non-root user. The image tag is the
# release of both the binary and its scripts (see docs/operations.md).
#
#   docker build -t REGISTRY/redis-janitor:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm REGISTRY/redis-janitor:0.1.0 scripts
#
# Checked without a Docker engine: hadolint and checkov in .ci/deploy-checks,
# and tests/deploy.rs (the version labels against the binary).

# The builder's Rust, at least Cargo.toml's rust-version. Its Debian release
# (bookworm, glibc 2.36) must match the runtime's (distroless debian12): the
# binary links glibc dynamically.
ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src

# Dependencies in their own layer: it is rebuilt only when Cargo.toml or
# Cargo.lock change. A stub crate stands in for our sources meanwhile.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --locked --release \
    && rm -rf src

# Our sources. COPY keeps their modification times, which can be older than the
# stub's build: touch them so cargo rebuilds the crate (and re-embeds lua/).
COPY src ./src
COPY lua ./lua
RUN touch src/main.rs src/lib.rs \
    && cargo build --locked --release \
    && ./target/release/redis-janitor scripts \
    && ./target/release/redis-janitor check > /dev/null

# Runtime: glibc and libgcc_s (the binary needs no more: rustls with ring, no
# OpenSSL), no shell, no package manager; the nonroot variant runs as 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

# checkov:skip=CKV_DOCKER_2:A batch job that exits after one pass has nothing for HEALTHCHECK to probe (Kubernetes ignores HEALTHCHECK; the Job's exit code and activeDeadlineSeconds are its health).

# Pass the commit at build time: --build-arg REVISION="$(git rev-parse HEAD)".
ARG REVISION=unknown

# version: Cargo.toml's package version; script-version: src/script/mod.rs VERSION.
# tests/deploy.rs keeps both equal to the crate's.
LABEL org.opencontainers.image.title="redis-janitor" \
      org.opencontainers.image.description="Cleans a Redis keyspace by rules: one SCAN pass, one atomic Lua script call per batch." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/redis-janitor/redis-janitor" \
      org.opencontainers.image.licenses="MIT" \
      io.github.redis-janitor.script-version="v11"

# Owned by root and not writable by the user it runs as.
COPY --from=builder /src/target/release/redis-janitor /usr/local/bin/redis-janitor

USER 65532:65532
ENTRYPOINT ["/usr/local/bin/redis-janitor"]
CMD ["run"]
