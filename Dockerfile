# syntax=docker/dockerfile:1.7
# The processor's container image: a multi-stage build with cached dependencies and a small
# non-root runtime. Build for both architectures with
#   docker buildx build --platform linux/arm64,linux/amd64 -t IMAGE --push .
# (infra/deploy.sh does this). Each platform builds natively under buildx; the cargo
# registry and target folders are cache mounts, so a rebuild after a source change only
# recompiles the workspace's own crates.
ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,id=cargo-registry \
    --mount=type=cache,target=/src/target,id=cargo-target-${TARGETARCH} \
    cargo build --release --locked -p processor --bin processor \
    && cp target/release/processor /usr/local/bin/processor

# distroless: glibc and CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
# The dataset catalog baked into the image; pass --build-arg CATALOG=path/to/yours.toml.
ARG CATALOG=catalog/ecommerce.toml
COPY --from=build /usr/local/bin/processor /usr/local/bin/processor
COPY ${CATALOG} /etc/redshift-ingest/catalog.toml
ENV INGEST_CATALOG__PATH=/etc/redshift-ingest/catalog.toml
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/processor", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/processor"]
CMD ["serve"]
