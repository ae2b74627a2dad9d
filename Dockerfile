# prepd: build in one stage, run from a slim image as a non-root user.
# syntax=docker/dockerfile:1
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked \
    && install -D target/release/prepd /out/prepd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data prepd \
    && mkdir -p /data && chown prepd /data
COPY --from=build /out/prepd /usr/local/bin/prepd
USER prepd
ENV PREPD_ADDR=0.0.0.0:8080 \
    PREPD_DATA_DIR=/data \
    PREPD_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["prepd"]
CMD ["serve"]
