# syntax=docker/dockerfile:1
# One image for the store node (default entrypoint), the REST API (laundry-api) and the
# operator CLI (laundryctl, used by the pre-stop hook and the backup CronJob).
#   docker build -t laundry-list:dev .
#   docker run --rm laundry-list:dev --help
# Build stage: the workspace's release binaries. protoc comes from a vendored crate, so
# the stock Rust image needs nothing else.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p laundry-node -p laundry-api -p laundry-client --bins \
    && mkdir -p /out/bin /out/data \
    && cp target/release/laundry-node target/release/laundry-api target/release/laundryctl /out/bin/

# Runtime: distroless (glibc and CA certificates, no shell, no package manager), non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/bin/ /usr/local/bin/
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/laundry/
USER 65532:65532
ENV LAUNDRY_DATA_DIR=/var/lib/laundry/data \
    LAUNDRY_BACKUP_DIR=/var/lib/laundry/backups \
    LAUNDRY_CLIENT_ADDR=0.0.0.0:7401 \
    LAUNDRY_PEER_ADDR=0.0.0.0:7501 \
    LAUNDRY_ADMIN_ADDR=0.0.0.0:7601 \
    LAUNDRY_API_LISTEN=0.0.0.0:8080
# client (gRPC), peer (Raft, mutual TLS), admin (HTTP), REST API (laundry-api only)
EXPOSE 7401 7501 7601 8080
VOLUME ["/var/lib/laundry"]
ENTRYPOINT ["/usr/local/bin/laundry-node"]
