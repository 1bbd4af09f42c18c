# syntax=docker/dockerfile:1
# Build: a full Rust toolchain; the result is one static-enough binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so edits to the source reuse the cached dependency layer.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src tests/it \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs tests/it/main.rs \
 && cargo build --release --locked \
 && rm -rf src tests
COPY . .
# Make sure cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin tessera

# Run: a small Debian with CA certificates (for PostgreSQL over TLS and upstream providers).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 tessera \
 && useradd --system --uid 10001 --gid tessera --home-dir /var/lib/tessera --shell /usr/sbin/nologin tessera \
 && mkdir -p /var/lib/tessera/data \
 && chown -R tessera:tessera /var/lib/tessera
COPY --from=build /src/target/release/tessera /usr/local/bin/tessera
WORKDIR /var/lib/tessera
USER tessera:tessera
# SQLite database (the default store) lives here; mount a volume to keep it.
VOLUME ["/var/lib/tessera/data"]
ENV TESSERA_BIND=0.0.0.0:8080 \
    TESSERA_LOG_FORMAT=json
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tessera"]
CMD ["serve"]
