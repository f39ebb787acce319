# Build: docker build -t playstate .
# Run:   docker run -p 8080:8080 -e PLAYSTATE_AUTH__JWT_HS256_SECRET=<the token issuer's key> playstate
#        or, behind a gateway that verifies bearer tokens and alone reaches the container,
#        -e PLAYSTATE_AUTH__TRUST_UPSTREAM=true. With neither, a node listening on 0.0.0.0
#        (as here) refuses to start: it would take any token's `sub` on trust.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
# Cache dependencies separately from the sources.
RUN mkdir -p src loadtest/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked -p playstate && rm -rf src loadtest/src
COPY config config
COPY src src
COPY loadtest/src loadtest/src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p playstate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/playstate playstate \
    && mkdir -p /var/lib/playstate && chown playstate /var/lib/playstate
COPY --from=build /src/target/release/playstate /usr/local/bin/playstate
USER playstate
WORKDIR /var/lib/playstate
ENV PLAYSTATE_SERVER__LISTEN=0.0.0.0:8080 \
    PLAYSTATE_STORAGE__DATA_DIR=/var/lib/playstate/data
# The cluster listener stays on loopback unless told otherwise: for a cluster set
# PLAYSTATE_CLUSTER__LISTEN=0.0.0.0:7080 and PLAYSTATE_CLUSTER__SECRET (required then).
EXPOSE 8080 7080
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:8080/health || exit 1
# SIGTERM hands this node's shards to the others (in a cluster), drains in-flight
# requests and stops actors before exit.
STOPSIGNAL SIGTERM
ENTRYPOINT ["playstate"]
CMD ["serve"]
