# syntax=docker/dockerfile:1
#
# secretmode: one static binary that is both the webhook (`secretmode serve`) and the injected
# agent (`secretmode agent`, run by the agent containers as /secretmode), and the small static
# exec wrapper /secretmode-exec (std only, `secrets/env-values` in csi, init and sidecar: the
# `secretmode-exec` init container copies it into each pod; docs/AGENT.md, "Exec wrapper").
#
#   docker build -t ghcr.io/secretmode/secretmode:0.1.0 .
#
# Stage 1 builds a fully static musl release binary; stage 2 is distroless/static (CA
# certificates and tzdata only: no shell, no package manager) running as a numeric non-root user.

# The toolchain the project is built and tested with (some dependencies need 1.94+).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# musl-gcc compiles ring's C and assembly for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole source tree (see .dockerignore): Cargo.toml may name benches and extra targets.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eux; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --bin secretmode --bin secretmode-exec; \
    install -D -m 0755 "target/$target/release/secretmode" /out/secretmode; \
    install -D -m 0755 "target/$target/release/secretmode-exec" /out/secretmode-exec; \
    /out/secretmode version; \
    printf ok > /tmp/check; \
    CHECK_FILE=/tmp/check /out/secretmode-exec --env CHECK -- sh -c 'test "$CHECK" = ok'; \
    /out/secretmode-exec --help >/dev/null

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="secretmode" \
      org.opencontainers.image.description="Kubernetes mutating admission webhook: choose per workload how secrets reach pods" \
      org.opencontainers.image.source="https://github.com/secretmode/secretmode" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 --chmod=0555 /out/secretmode /secretmode
COPY --from=build --chown=0:0 --chmod=0555 /out/secretmode-exec /secretmode-exec
# distroless's `nonroot` user, by number so runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8443 8080
# mimalloc (the global allocator) would otherwise commit its first arena eagerly: an idle agent
# sidecar then holds ~19 MiB instead of ~12 MiB, on every pod (docs/BENCHMARKS.md).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0
ENTRYPOINT ["/secretmode"]
CMD ["serve"]
